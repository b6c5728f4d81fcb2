-- Verification checks a slice (a run of consecutive windows) in two steps: one count and
-- checksum of the whole slice on each side; only when those differ, each window's own. A
-- slice's checksum is the sum of its windows' checksums, so a matching slice matches in every
-- window: its windows are recorded as matched, with the slice's totals kept on the slice and
-- no per-window counts. A mismatched window always has its counts.
ALTER TABLE verification_slices
  ADD COLUMN v1_rows bigint,
  ADD COLUMN v2_rows bigint,
  ADD COLUMN v1_checksum numeric,
  ADD COLUMN v2_checksum numeric,
  ADD COLUMN matched boolean;

ALTER TABLE verification_windows
  ALTER COLUMN v1_rows DROP NOT NULL,
  ALTER COLUMN v2_rows DROP NOT NULL,
  ALTER COLUMN v1_checksum DROP NOT NULL,
  ALTER COLUMN v2_checksum DROP NOT NULL,
  ADD CONSTRAINT verification_windows_counted CHECK (
    matched OR (v1_rows IS NOT NULL AND v2_rows IS NOT NULL AND v1_checksum IS NOT NULL AND v2_checksum IS NOT NULL));
