"""The leaderboards: the compiler (this package) beside its data (published.csv, records/, runs/, and the
compiled README.md, tables/ and plots/).

    collect    our result records: read, validate, group and aggregate over seeds
    published  published.csv (package data) and its rows; refresh from sources/ (each row naming its source)
    ssl_transfer  ssl-transfer's tables as transcribed in sources/, in the names our records use
    variants   the protocol variant of every published row and of our presets; which may share a table
    placement  the table and column of each number (low-shot per k, separate variants, per-dataset folding)
    render     benchmark families, wide tables, Markdown and CSV
    figures    the PNG plots (low-shot curves, pre-training curves, HEXA against its baseline)
    compiler   compile_leaderboard: all of the above into <out>/
    cli        `hexa leaderboard`

It stands on hexa_zoo (records, the catalog, model cards) and imports neither pretrain nor transfer:
it reads their outputs, files on disk.
"""
