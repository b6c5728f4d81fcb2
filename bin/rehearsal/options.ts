import { z } from 'zod';
import { DEFAULT_CUTOVER_SCHEDULE } from '../../lambdas/core/config';
import { InvalidInputError } from '../../lambdas/core/errors';
import type { CommandHelp } from '../cli-args';

/** Where a kept local migration lives (`rehearse --keep-db`, `migrate … --local`). */
export const DEFAULT_LOCAL_DIR = '.rehearsal/local';

/** The rehearsal's cutover levels: the default schedule's (with the rehearsal's short bakes). */
export const REHEARSAL_LEVELS = DEFAULT_CUTOVER_SCHEDULE.map((level) => level.percentage);

const postgresUrl = z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL');

/** The rehearsal's flags; each description is its `--help` line. */
export const rehearsalFlags = z
  .object({
    devices: z.coerce
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(1000)
      .describe('devices of the generated V1'),
    telemetry: z.coerce
      .number()
      .int()
      .min(0)
      .max(200_000_000)
      .default(1_000_000)
      .describe('telemetry rows of the generated V1'),
    seed: z.coerce
      .number()
      .int()
      .min(0)
      .default(1)
      .describe('seed of the generated V1 (same seed, same data)'),
    v1Url: postgresUrl.optional().describe('rehearse against your own V1 (only read); needs --v2-url'),
    v2Url: postgresUrl.optional().describe('…and your own V2 database'),
    generateV1In: z
      .string()
      .min(1)
      .optional()
      .describe(
        'with --v1-url: when that database has none of V1’s tables, generate a V1 into it; must name ' +
          'the database --v1-url points to (without this flag such a V1 is refused, nothing written)',
      ),
    includeCleanup: z
      .boolean()
      .default(false)
      .describe('with --v1-url: also run cleanup (renames V1’s tables; never drops)'),
    failAt: z
      .string()
      .optional()
      .describe(
        `cutover:<level> (${REHEARSAL_LEVELS.join(', ')}): the health gate turns unhealthy at that level; ` +
          'write-switch: the alarm fires after the write switch: watch the rollback',
      ),
    killWorkers: z
      .boolean()
      .default(false)
      .describe('terminate worker sessions mid-window; the backfill still lands every row'),
    dualWriteLoad: z.coerce
      .number()
      .int()
      .min(1)
      .max(5000)
      .optional()
      .describe('a synthetic backend dual-writes at ~N operations/s during phases 2–4'),
    bakeSeconds: z.coerce
      .number()
      .int()
      .min(0)
      .max(3600)
      .default(2)
      .describe('bake time of each cutover level'),
    concurrency: z.coerce
      .number()
      .int()
      .min(1)
      .max(16)
      .default(2)
      .describe('workers copying windows at once'),
    windowRows: z.coerce
      .number()
      .int()
      .min(100)
      .max(5_000_000)
      .default(50_000)
      .describe('telemetry rows per backfill window'),
    reportDir: z.string().min(1).default('.rehearsal/reports').describe('where the JSON and HTML reports go'),
    keepDb: z
      .boolean()
      .default(false)
      .describe(`keep the embedded database in --local-dir (default: removed on any exit)`),
    localDir: z
      .string()
      .min(1)
      .default(DEFAULT_LOCAL_DIR)
      .describe('with --keep-db: where the database is kept (`npm run migrate -- … --local` uses it)'),
    json: z.boolean().default(false).describe('print one JSON object (the summary) as the last line'),
  })
  .strict();

export const REHEARSAL_HELP: CommandHelp = {
  usage: 'npm run rehearse -- [flags]',
  summary:
    'Rehearses the whole migration on this machine: an embedded PostgreSQL (or your databases), a\n' +
    'generated V1, and the CDK app’s own state machines run locally through all five phases.',
  values: {
    devices: 'N',
    telemetry: 'N',
    seed: 'S',
    v1Url: 'URL',
    v2Url: 'URL',
    generateV1In: 'DATABASE',
    failAt: 'cutover:25|write-switch',
    dualWriteLoad: 'N',
    bakeSeconds: 'S',
    concurrency: 'N',
    windowRows: 'N',
    reportDir: 'DIR',
    localDir: 'DIR',
  },
  notes: [
    'exit status: 0 migrated and verified clean; 3 rolled back (as --fail-at rehearses);',
    '             1 something failed (printed, and in the report); 2 a flag is invalid',
  ],
};

/** What runRehearsal needs: the flags' values, and where its output goes. */
export interface RehearsalOptions {
  v1Url?: string;
  v2Url?: string;
  devices: number;
  telemetry: number;
  seed: number;
  /**
   * `cutover:<percentage>`: the health gate turns unhealthy at that traffic level;
   * `write-switch`: the rollback alarm fires after the write switch.
   */
  failAt?: string;
  killWorkers: boolean;
  dualWriteLoad?: number;
  /**
   * With `v1Url`: the database it names, which the rehearsal may generate a V1 into when it has
   * none of V1's tables (refused otherwise, V1NotFoundError).
   */
  generateV1In?: string;
  includeCleanup: boolean;
  bakeSeconds: number;
  concurrency: number;
  windowRows: number;
  reportDir: string;
  /** Keep the embedded database in `localDir`. @default false */
  keepDb?: boolean;
  /** @default DEFAULT_LOCAL_DIR */
  localDir?: string;
  /** Where progress goes (stdout by default). */
  print: (line: string) => void;
  /** Whether progress may redraw one line (a terminal). */
  tty: boolean;
}

/** Where `--fail-at` injects the fault: a cutover level, or after the write switch. */
export type FailAt = { at: 'cutover'; level: number } | { at: 'write-switch' };

/**
 * `cutover:<level>` (a level of the schedule) or `write-switch`; InvalidInputError otherwise.
 */
export function parseFailAt(value: string | undefined): FailAt | undefined {
  if (value === undefined) return undefined;
  if (value === 'write-switch') return { at: 'write-switch' };
  const match = /^cutover:(\d{1,3})$/.exec(value);
  if (!match || !REHEARSAL_LEVELS.includes(Number(match[1]))) {
    throw new InvalidInputError('command-line flags', [
      {
        field: '--fail-at',
        problem: `must be cutover:<level>, a level being one of ${REHEARSAL_LEVELS.join(', ')} (e.g. cutover:25), or write-switch`,
      },
    ]);
  }
  return { at: 'cutover', level: Number(match[1]) };
}

/** Checks what the flags' schema cannot see alone; throws InvalidInputError before anything runs. */
export function checkOptions(options: RehearsalOptions): { failAt?: FailAt } {
  const failAt = parseFailAt(options.failAt);
  if (Boolean(options.v1Url) !== Boolean(options.v2Url)) {
    throw new InvalidInputError('command-line flags', [
      { field: '--v1-url/--v2-url', problem: 'give both, or neither' },
    ]);
  }
  if (options.generateV1In !== undefined) {
    const named = options.v1Url ? databaseOfUrl(options.v1Url) : undefined;
    if (named !== options.generateV1In) {
      throw new InvalidInputError('command-line flags', [
        {
          field: '--generate-v1-in',
          problem: options.v1Url
            ? `must name the database --v1-url points to (${named ?? 'none'}), not ${options.generateV1In}`
            : 'needs --v1-url (the embedded database is generated into anyway)',
        },
      ]);
    }
  }
  if (options.keepDb && options.v1Url) {
    throw new InvalidInputError('command-line flags', [
      { field: '--keep-db', problem: 'keeps the embedded database: not with --v1-url' },
    ]);
  }
  return { failAt };
}

/** The database a postgres:// URL names (its path), or undefined when it names none. */
export function databaseOfUrl(url: string): string | undefined {
  try {
    const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
    return name || undefined;
  } catch {
    return undefined;
  }
}
