"""`krl experiment`: strategies x seeds at equal rollout budgets, on the simulator or on the real
tiny-model loop, aggregated into a table with mean and spread over seeds and into plots."""
