-- Whether a `tidegate db catch-up` of this schema began and has not finished (`servicekit/catch_up_marks.py`): the
-- service's start refuses while it has not, since rows a cut-off catch-up wrote back are dated when written and would
-- hide from the start's check the events still missing. One row; none until the first catch-up.
CREATE TABLE catch_up_runs (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    started_at timestamptz NOT NULL,
    finished_at timestamptz
);
