import { backfillLine, ETA_AFTER_FRACTION, knownEta } from '../../bin/rehearsal/progress';
import type { BackfillProgress } from '../../lambdas/core/backfill';

/** Backfill progress as backfillProgress reports it, with the given rows copied of 1,000,000. */
const progress = (rowsCopied: number, over: Partial<BackfillProgress> = {}): BackfillProgress => ({
  planned: true,
  complete: false,
  windowsTotal: 23,
  windowsDone: 2,
  windowsFailed: 0,
  rowsCopied,
  rowsExpected: 1_000_000,
  rowsPerSecond: 500,
  etaSeconds: Math.round((1_000_000 - rowsCopied) / 500),
  elapsedSeconds: 2,
  tables: {},
  failures: [],
  throttle: {
    state: 'running',
    cause: null,
    since: '2026-01-01T00:00:00.000Z',
    paused: false,
    rowsPerSecond: null,
    windowRows: null,
  },
  ...over,
});

describe('backfill progress line', () => {
  it('shows no ETA while the rate comes only from the first small windows', () => {
    const early = progress(1100);

    expect(knownEta(early)).toBeUndefined();
    expect(backfillLine(early)).toBe(
      '[BACKFILL] ██░░░░░░░░░░░░░░░░░░░░░░ 2/23 windows · 1,100 rows · 500 rows/s',
    );
  });

  it('shows the ETA once enough rows are copied for the rate to mean something', () => {
    const rows = ETA_AFTER_FRACTION * 1_000_000;
    const later = progress(rows, { windowsDone: 3, rowsPerSecond: 25_000, etaSeconds: 38 });

    expect(knownEta(later)).toBe(38);
    expect(backfillLine(later)).toMatch(/ · 25,000 rows\/s · ETA 38 s$/);
  });

  it('shows no ETA without a rate', () => {
    expect(knownEta(progress(200_000, { rowsPerSecond: 0, etaSeconds: null }))).toBeUndefined();
  });

  it('says when and why the workers are held back', () => {
    const held = progress(1100, {
      throttle: { ...progress(0).throttle, state: 'pressure', cause: 'V1 commit latency over 50 ms' },
    });
    expect(backfillLine(held)).toMatch(/ · pressure \(V1 commit latency over 50 ms\)$/);
    expect(backfillLine(progress(1100))).not.toMatch(/running|pressure/);
  });
});
