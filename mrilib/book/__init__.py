"""The book: execute every notebook with papermill, then build the HTML with jupyter-book."""
