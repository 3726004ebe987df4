"""Pictures: attention views (``attention``) and the tokenizer explorer (``tokens``).

Every view renders to self-contained HTML (no CDN, no network), so it shows the same in
JupyterLab, in an exported notebook and offline.
"""
