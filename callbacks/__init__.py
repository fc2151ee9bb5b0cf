"""Small Lightning callbacks of the zoo (SWA, EMA and EarlyStopping are Lightning's own)."""
