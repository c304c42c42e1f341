"""The top floor: jobs that run the others (the demo, studies). It may import every layer below."""
