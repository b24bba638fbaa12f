"""The results of a search on disk: the contract every reader shares, and what is built from it.

    layout     folder and file names of `STORAGE/NAME/`, finding a search by name or folder
    record     `search.json`: the typed record of what a search was asked to do (one reader, one writer)
    storage    the Optuna study of a search: where it lives, opening it (journal file or database URL)
    tables     trials.parquet / steps.parquet: columns, atomic writes, reads, console tables
    checkpoint a trial checkpoint's learner state (loaded without unpickling) and its activations
    export     ranking trials and writing the best trials' activation files
    summary    summary.md: the validation / Hessian comparison with its statistics
    report     report.html (report_data loads and analyses, report renders)
    dashboard  optuna-dashboard served on a search's study

Layering: this package imports the science modules and Optuna, never Ray; `dnn_search.search` (the
only code that imports Ray) writes these files through it, and the CLI sits on top of both.
"""
