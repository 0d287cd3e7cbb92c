-- A task's state (1.5-2.2 KB once lz4 has compressed a few steps' worth) was moved out of line into the
-- TOAST table at every write: each update wrote new TOAST chunks and their index entries and deleted
-- the old ones. STORAGE MAIN keeps it compressed in the row unless the row still cannot fit a page, and
-- pages left a quarter free let an update write the new row version on the same page (a HOT update:
-- no new index entries), as long as its status is unchanged. One 5.3 KB state updated 3,000 times on
-- a table with the planner's two indexes: 2.66 -> 2.06 KB of WAL an update, every update HOT. Neither
-- rewrites the table (rows written before keep their place until their next update); both are
-- catalog changes taken in a moment.
ALTER TABLE tasks ALTER COLUMN state SET STORAGE MAIN;
ALTER TABLE tasks SET (fillfactor = 75);
