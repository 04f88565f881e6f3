"""The book: execute every notebook with papermill, build the HTML with jupyter-book, and write the README's results (report)."""
