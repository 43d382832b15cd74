"""Networks only, one file per family; training logic lives in ganforge.families."""
