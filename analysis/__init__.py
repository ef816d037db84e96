"""From Inspect logs to the persona taxonomy, statistics, figures and report."""
