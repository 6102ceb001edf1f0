"""What the trainer and the simulator share (the ground floor, below the services): the data
order (data.py), the strategies' allocator arguments and the dynamic-sampling keep rule
(strategies.py, dynamic.py), and the run folder's logs with their reader (runlog.py)."""
