"""The console's pages, one module per question an operator asks."""
