# The README's test command: every notebook's lesson cells, then the pytest integration suite.
.PHONY: test test-slow export bench docs-preview outputs

# one torch/OpenMP thread per process: two notebooks (and two pytest workers) run at once, and oversubscribed
# threads made the suite several times slower on 2 cores; --dist loadfile keeps a test file on one worker, so the
# fixtures a file shares (a tiny trained run, a tiny sweep) are built once
# the lessons show real MedMNIST images where $TOPOCL_DATA names a folder holding them (`topocl.data.example_data`,
# else the synthetic set); in the project's workspace the official files sit beside the checkout
SHARED_DATA := $(wildcard $(CURDIR)/../shared/data/medmnist)

test:
	TOPOCL_DATA=$${TOPOCL_DATA:-$(SHARED_DATA)} OMP_NUM_THREADS=1 nbdev_test --n_workers 2 --timing
	OMP_NUM_THREADS=1 pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# also the cells and tests marked slow (minutes on 2 cores)
test-slow:
	TOPOCL_DATA=$${TOPOCL_DATA:-$(SHARED_DATA)} OMP_NUM_THREADS=1 nbdev_test --n_workers 2 --timing --flags slow
	OMP_NUM_THREADS=1 pytest -q -n 2 --dist loadfile --no-loadscope-reorder --runslow

export:
	python scripts/make_readme.py
	nbdev_export
	nbdev_clean

bench:
	python bench/persistence.py
	python bench/training.py

# the docs pages as static HTML in _preview/ (open _preview/index.html), from the outputs stored in the
# notebooks, nothing executed: quarto, which builds the real site, cannot be installed on our machines
docs-preview:
	python scripts/docs_preview.py nbs --out _preview

# run the lesson notebooks and store the outputs a reader should see (figures, tables, short prints), as the
# docs site and GitHub show them: after changing what a lesson draws or prints
outputs:
	TOPOCL_DATA=$${TOPOCL_DATA:-$(SHARED_DATA)} MPLBACKEND= OMP_NUM_THREADS=1 python scripts/store_outputs.py
	nbdev_clean
