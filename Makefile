# The README's test command: every notebook's lesson cells, then the pytest integration suite.
.PHONY: test test-slow export clean bench

test:
	nbdev_test --n_workers 2 --timing
	pytest -q

# also the cells and tests marked slow (minutes on 2 cores)
test-slow:
	nbdev_test --n_workers 2 --timing --flags slow
	pytest -q --runslow

export:
	python scripts/make_readme.py
	nbdev_export
	nbdev_clean

bench:
	python bench/persistence.py
	python bench/training.py
