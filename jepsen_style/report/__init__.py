"""A run's outputs: `results.json` (`results`), PNG charts (`charts`) and
`report.html` (`html`), from figures computed in `stats`."""
