"""What a run tells the person afterwards, read from the run store: the results workbook (with its
Attention sheet), the HTML run report and its timeline, and rrweb replays."""
