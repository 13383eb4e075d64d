"""The verdict: are the tickets of finished IMP runs information channels or subcircuits?

`rundata` reads run directories; one module per test (`ticket` T0 .. `signature` T6), each
with its statistic, null and rule; `battery` holds the registry and builds the verdict;
`calibration` scores the battery on planted worlds whose truth is known. Everything here reads
finished runs: it never trains.
"""
