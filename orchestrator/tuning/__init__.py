"""Fair tuning with Ray Tune: every tuned method gets the same budget, on the validation split of its tuning seeds.

`plan.Planner.tune_stage` adds one `tune` stage per tuned method entry; the scheduler hands it to a `TuneActor`
(`search.py`), which runs a seeded random search with ASHA over the method's search space. Each configuration
is a Tune trial (`trial.py`) running the method's own stages (the same worker code as the sweep) at the tuning
sparsities, on data without its test split, reporting validation accuracy per retraining epoch. The chosen
values are the tune stage's output; the method's evaluation stages read them (`workers.stages.dispatch.with_tuned`).
"""
