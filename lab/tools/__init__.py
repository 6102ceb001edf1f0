"""Lab tools for the allocator, above the services and outside their images: the solver
benchmark (`krl bench allocator`), the soak test (`krl soak`), `krl solve` and the paper's
dynamic program (the baseline the exact solver is checked and timed against)."""
