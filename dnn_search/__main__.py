from dnn_search.cli import run

run()
