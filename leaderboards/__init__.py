"""The leaderboards: the compiler that turns result records and published numbers into the board.

Its inputs ship with it (published.csv and sources/, package data); what it writes (README.md, tables/, plots/,
site/index.html, studies/) goes to `--out`, by default the committed board in board/ beside the code, which also
holds the records and run logs it was compiled from.

    collect      our result records: read, validate, group and aggregate over seeds
    published    published.csv and its rows; refresh from sources/ (each row naming its source)
    ssl_transfer ssl-transfer's tables as transcribed in sources/, in the names our records use
    variants     the protocol variant of every published row and of our presets; which may share a table
    placement    the table and column of each number (low-shot per k, separate variants, per-dataset folding)
    render       benchmark families, wide tables, Markdown and CSV
    figures      the plots (low-shot curves, pre-training curves, HEXA against its baseline)
    site         the web page: one self-contained HTML file
    compiler     compile_leaderboard: all of the above into <out>/
    model_index  `--update-cards`: each zoo card's Hub model-index from the records of its weights
    studies      study reports: a `hexa study` folder's table and plot of differences
    cli          `hexa leaderboard`

It stands on hexa_zoo (records, the catalog, model cards) and imports neither pretrain nor transfer:
it reads their outputs, files on disk.
"""
