import { backfillProgress, type BackfillProgress } from '../../lambdas/core/backfill';
import type { MachineName } from '../../lambdas/adapters/local/local-state-machines';
import type { RehearsalReport } from './report';
import type { LocalEnvironment } from './local-environment';

/**
 * States that are plumbing (input checks, the lock, choices, waits, polls): the progress line
 * covers them, so they are not printed as steps.
 */
const PLUMBING =
  /^(Validate input|Take the migration lock|Release the lock.*|Done|Find the next phase|Wait .*|Check .*|Held: wait)$|\?$/;

/** States entered once per cutover level: printed with the level they act on. */
const PER_LEVEL = new Set(['Set the next traffic level', 'Bake', 'Health gate: alarms and drift']);

/**
 * Share of the expected rows that must be copied before an ETA is shown: the first windows
 * (users, devices) are small and fast, and a rate taken from them says nothing about telemetry.
 */
export const ETA_AFTER_FRACTION = 0.05;

/** The ETA of a backfill, once enough of it is copied for its rate to mean something. */
export function knownEta(p: BackfillProgress): number | undefined {
  if (p.etaSeconds === null || p.rowsPerSecond <= 0 || p.rowsExpected <= 0) return undefined;
  return p.rowsCopied / p.rowsExpected >= ETA_AFTER_FRACTION ? p.etaSeconds : undefined;
}

/** Longest a log goes without a progress line while no window completes. */
const QUIET_LOG_MS = 10_000;

const bar = (done: number, total: number, width = 24) => {
  const filled = total > 0 ? Math.round((done / total) * width) : 0;
  return `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
};

/** One backfill progress line: windows, rows, rate, an ETA once it is known, and the throttle when it holds the workers back. */
export function backfillLine(p: BackfillProgress): string {
  const eta = knownEta(p);
  return (
    `[BACKFILL] ${bar(p.windowsDone, p.windowsTotal)} ${p.windowsDone}/${p.windowsTotal} windows · ` +
    `${p.rowsCopied.toLocaleString('en-US')} rows · ${p.rowsPerSecond.toLocaleString('en-US')} rows/s` +
    (eta === undefined ? '' : ` · ETA ${eta} s`) +
    (p.throttle.state === 'running'
      ? ''
      : ` · ${p.throttle.state}${p.throttle.cause ? ` (${p.throttle.cause})` : ''}`)
  );
}

export interface Progress {
  /** A new execution starts: its steps are printed afresh. */
  begin(): void;
  /** For LocalStateMachines' `onState`: prints each meaningful state once. */
  onState(machine: MachineName, state: string): void;
  /** The backfill's throughput samples, for the report's chart. */
  samples: RehearsalReport['throughput']['samples'];
  /** Takes one last sample and stops the timer. */
  stop(): Promise<void>;
}

/**
 * Shows what the state machines do: each step once per execution (a step entered again, as
 * on a retry, is not printed again; cutover steps are printed once per traffic level), and while
 * the backfill runs, its progress: redrawn every 0.5 s on a terminal; in a log, a line when a
 * window is done (checked every 2 s) or after 10 s without one. Samples the backfill's
 * throughput every 250 ms for the report.
 */
export function startProgress(
  env: Pick<LocalEnvironment, 'v2' | 'config' | 'parameters' | 'names'>,
  options: { print: (line: string) => void; tty: boolean },
): Progress {
  const { print, tty } = options;
  const samples: Progress['samples'] = [];
  const printed = new Set<string>();
  let state = '';
  let lastLine = '';
  const backfilling = () => /backfill/i.test(state);

  const sample = async () => {
    const p = await backfillProgress(env.v2, env.config).catch(() => undefined);
    if (!p?.planned) return undefined;
    const last = samples[samples.length - 1];
    if (!last || last.rows !== p.rowsCopied || !p.complete) {
      samples.push({ t: p.elapsedSeconds, rowsPerSecond: p.rowsPerSecond, rows: p.rowsCopied });
    }
    return p;
  };
  const traffic = async () => (await env.parameters.get(env.names.trafficPercentage)) ?? '0';
  let lastDone = -1;
  let lastShownAt = 0;
  const show = async () => {
    if (!backfilling()) return;
    const p = await sample();
    const line = p && backfillLine(p);
    if (!p || !line || line === lastLine) return;
    // In a log, a line when a window is done, else one every 10 s to show it is alive.
    if (!tty && p.windowsDone === lastDone && Date.now() - lastShownAt < QUIET_LOG_MS) return;
    lastDone = p.windowsDone;
    lastShownAt = Date.now();
    lastLine = line;
    if (tty) process.stdout.write(`\r${line.padEnd(110).slice(0, 140)}`);
    else print(line);
  };
  const step = async (name: MachineName, entered: string) => {
    const level = PER_LEVEL.has(entered) ? await traffic() : undefined;
    const key = `${name}:${entered}:${level ?? ''}`;
    if (printed.has(key)) return;
    // Setting the next level has not set it yet: the level shows on its bake and gate.
    const label =
      level === undefined || entered === 'Set the next traffic level'
        ? entered
        : `${entered} · traffic to V2 ${level} %`;
    printed.add(key);
    if (tty && lastLine) process.stdout.write('\n');
    lastLine = '';
    print(`[${name}] ${label}`);
  };

  let ticks = 0;
  const timer = setInterval(() => {
    ticks++;
    if (tty ? ticks % 2 === 0 : ticks % 8 === 0) void show();
    else if (backfilling()) void sample();
  }, 250);

  return {
    samples,
    begin: () => printed.clear(),
    onState: (name, entered) => {
      // The backfill's last figures, as it ends.
      if (backfilling() && !/backfill/i.test(entered)) void sample();
      state = entered;
      if (!PLUMBING.test(entered)) void step(name, entered);
    },
    stop: async () => {
      clearInterval(timer);
      await sample();
      if (tty && lastLine) process.stdout.write('\n');
    },
  };
}
