"""captionlab serve: a web page and HTTP API over a captioner, with dynamic batching."""
