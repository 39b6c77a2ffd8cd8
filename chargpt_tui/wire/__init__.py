"""Between a run and its viewers: the protocol, where a run is found, what late viewers get, a viewer's end."""
