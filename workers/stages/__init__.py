"""The stages of a sweep, by job: `kit` (what a stage is and the helpers every runner uses), `shared` (the stages
every seed shares, and the sanity-check ablations) and `dispatch` (`run_stage`: a stage to the function that runs
it). Method families' runners (`workers/methods/*/run.py`) import the kit; dispatch imports them."""
