"""The run itself: contacts in, work fanned out, state for resume, report and progress out."""
