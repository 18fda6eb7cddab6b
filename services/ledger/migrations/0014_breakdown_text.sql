-- Settlement speed (issue 15): a line's breakdown is stored as plain text, the
-- JSON the ledger itself wrote with serde_json, so Postgres no longer lexes
-- every line to validate it (`json_lex`, about 3 % of Postgres's CPU in a
-- full-speed settlement profile; PostEntries writes ~5 lines of ~700 bytes
-- per sale). Nothing in SQL reads into it: it is read whole, by GetEntry,
-- ListEntries and the event feed, and parsed there. The json type kept the
-- input text as given, so every stored value keeps its text. (Rewrites the
-- table once.)
ALTER TABLE entries
    ALTER COLUMN breakdown DROP DEFAULT,
    ALTER COLUMN breakdown TYPE text USING breakdown::text,
    ALTER COLUMN breakdown SET DEFAULT '{}';
