"""The results of a search on disk: the contract every reader shares, and what is built from it.

    layout     folder and file names of `STORAGE/NAME/`, finding a search by name or folder
    record     `search.json`: the typed record of what a search was asked to do (one reader, one writer)
    storage    the Optuna study of a search: where it lives, opening it (journal file or database URL)
    tables     trials.parquet / steps.parquet: columns, atomic writes, reads, console tables
    checkpoint a trial checkpoint's learner state (loaded without unpickling) and its activations
    ranking    the one ranking of trials (export, the report and the terminal)
    export     writing the best trials' activation files
    comparison the validation comparison: arms, picks on validation, tests on test (Holm)
    summary_tables  the comparison's tables as rows of text (summary.md and the report)
    summary    summary.md: the comparison in Markdown, exported trials, every mode; written
    report     report.html, one builder per section (report_data loads and analyses; html: the
               HTML pieces; report_validation: the validation section; figures_search and
               figures_validation: the report's figures)
    dashboard  optuna-dashboard served on a search's study

Layering: this package imports the science modules and Optuna, never Ray; `dnn_search.search` (the
only code that imports Ray) writes these files through it, and the CLI sits on top of both.
"""
