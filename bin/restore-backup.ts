#!/usr/bin/env -S npx tsx
/**
 * `npm run backup:restore -- --backup <folder> --target-url postgres://…/<empty database>`
 * Restores a local V1 backup (Phase 1's, or cleanup's archive; a folder under
 * `.rehearsal/backups/` by default) into an existing, empty database: a pg_dump archive with
 * pg_restore of its major version, a built-in export with nothing installed. Then prints every
 * table's rows and whether they equal the backup's snapshot of V1.
 */
import { z } from 'zod';
import { restoreAndCheck } from '../lambdas/adapters/local/pg-backup';
import { exitOnError, parseArgs } from './cli-args';

export const restoreFlags = z
  .object({
    backup: z
      .string()
      .min(1, 'name the backup folder')
      .describe('the backup folder (Phase 1’s or cleanup’s, under .rehearsal/backups/ by default)'),
    targetUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
      .describe('an existing, empty database to restore into'),
  })
  .strict();

async function main() {
  const args = parseArgs(
    process.argv.slice(2),
    restoreFlags,
    {
      usage: 'npm run backup:restore -- --backup DIR --target-url URL',
      summary:
        'Restores a local V1 backup into an empty database, then checks every table against the backup’s snapshot of V1.',
      values: { backup: 'DIR', targetUrl: 'URL' },
      notes: [
        'The last line printed is one JSON object; exit status: 0 restored and equal; 1 restored but',
        'different, or the restore failed; 2 invalid flags',
      ],
    },
    'backup:restore',
  );
  const result = await restoreAndCheck(args.backup, args.targetUrl);
  for (const [table, f] of Object.entries(result.tables)) console.log(`${table.padEnd(24)} ${f.rows} rows`);
  console.log(
    result.differing.length === 0
      ? `restored: every table equals V1 as of ${result.snapshotAt}`
      : `restored, but it differs from the backup's snapshot: ${result.differing.join('; ')}`,
  );
  console.log(JSON.stringify({ ok: result.differing.length === 0, ...result }));
  if (result.differing.length > 0) process.exit(1);
}

if (require.main === module) main().catch(exitOnError);
