"""The per-PO workflow every run mode runs: open the page, prove what it is, collect the files, publish.

po_job.PoJob is the entry; job_config and po_task are what it is given; page_reader and page_probes
read pages; attachments, download_batch and download_one_by_one collect the files; publish names and
publishes them; artifacts and recorder keep what a failed or recorded attempt looked like.
"""
