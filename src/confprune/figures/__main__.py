"""``python -m confprune.figures <sweep dir>``: aggregate a run or multirun directory into one
table and draw its figures (:func:`confprune.figures.sweep.main`)."""

from .sweep import main

main()
