/**
 * Traffic router throughput and SSM call rate.
 *
 * Builds a TrafficRouter over SSM through Powertools (the SSM client mocked with
 * aws-sdk-client-mock, counting calls), default refresh interval, and calls route() on varied keys
 * for `--seconds N` (default 12), yielding to the event loop about every million calls so the
 * background refresh timer can fire. The last line printed is one JSON object:
 * {"decisionsPerSec":…,"nsPerDecision":…,"ssmCallsPerMinute":…}
 * where ssmCallsPerMinute counts the SSM calls made while the load ran (the initial load made by
 * start() before the loop is reported separately in the progress lines).
 *
 * Usage: npm run bench:router -- [--seconds N]
 */
import { GetParameterCommand, GetParametersCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { z } from 'zod';
import { exitOnError, parseArgs } from '../bin/cli-args';
import { DEFAULT_REFRESH_MS, TrafficRouter } from '../client/traffic-router';
import { parameterNames } from '../lambdas/ports/parameters';

const flags = z
  .object({
    seconds: z.coerce.number().positive().default(12).describe('how long the router is loaded'),
  })
  .strict();

async function main(): Promise<void> {
  const { seconds } = parseArgs(
    process.argv.slice(2),
    flags,
    {
      usage: 'npm run bench:router -- [flags]',
      summary:
        'TrafficRouter decisions per second, and SSM calls per minute at the default refresh interval.',
      values: { seconds: 'S' },
      notes: ['The last line printed is one JSON object with the figures.'],
    },
    'bench:router',
  );
  const prefix = '/bench/migration';
  const names = parameterNames(prefix);
  const percentage = '37';

  let ssmCalls = 0;
  const ssm = mockClient(SSMClient);
  ssm.on(GetParametersCommand).callsFake((input: { Names?: string[] }) => {
    ssmCalls += 1;
    const values: Record<string, string> = { [names.trafficPercentage]: percentage, [names.dualWrite]: 'on' };
    const wanted = input.Names ?? [];
    return {
      Parameters: wanted
        .filter((n) => n in values)
        .map((n) => ({ Name: n, Value: values[n], Type: 'String' })),
      InvalidParameters: wanted.filter((n) => !(n in values)),
    };
  });
  ssm.on(GetParameterCommand).callsFake((input: { Name?: string }) => {
    ssmCalls += 1;
    const value = input.Name === names.dualWrite ? 'on' : percentage;
    return { Parameter: { Name: input.Name, Value: value, Type: 'String' } };
  });

  const router = TrafficRouter.fromSsm({
    prefix,
    ssmClient: new SSMClient({ region: 'us-east-1' }),
    onInvalid: (r) => console.error(`unexpected report: ${r.error.message}`),
  });
  await router.start();
  const startupCalls = ssmCalls;
  const snap = router.snapshot();
  console.log(
    `router started: percentage=${snap.percentage} dualWrite=${snap.dualWrite} refreshMs=${router.refreshMs} ` +
      `(default ${DEFAULT_REFRESH_MS}); ${startupCalls} SSM call(s) for the first load`,
  );
  if (snap.percentage !== Number(percentage)) throw new Error('router did not load the mocked percentage');

  const keys = Array.from({ length: 65_536 }, (_, i) => `tenant-${(i * 2654435761) >>> 0}-device-${i}`);
  const mask = keys.length - 1;
  const batch = 1_000_000;
  const durationNs = BigInt(Math.round(seconds * 1e9));
  let decisions = 0;
  let toV2 = 0;
  let nextProgress = 2e9;

  const begin = process.hrtime.bigint();
  let elapsed = 0n;
  while (elapsed < durationNs) {
    for (let i = 0; i < batch; i++) {
      if (router.route(keys[(decisions + i) & mask]) === 'v2') toV2++;
    }
    decisions += batch;
    // Let the refresh timer (and the mocked SSM call it makes) run, as it would in a server.
    await new Promise<void>((resolve) => setImmediate(resolve));
    elapsed = process.hrtime.bigint() - begin;
    if (Number(elapsed) >= nextProgress) {
      const s = Number(elapsed) / 1e9;
      console.log(
        `${s.toFixed(1)} s: ${(decisions / 1e6).toFixed(0)}M decisions, ` +
          `${(decisions / s / 1e6).toFixed(2)}M/s, SSM calls during load ${ssmCalls - startupCalls}`,
      );
      nextProgress += 2e9;
    }
  }
  router.stop();
  ssm.restore();

  const elapsedS = Number(elapsed) / 1e9;
  const loadCalls = ssmCalls - startupCalls;
  console.log(
    `done: ${decisions} decisions in ${elapsedS.toFixed(2)} s, V2 share ${((100 * toV2) / decisions).toFixed(2)}% ` +
      `(percentage ${percentage}), SSM calls: ${startupCalls} at start + ${loadCalls} during load`,
  );
  console.log(
    JSON.stringify({
      decisionsPerSec: Math.round(decisions / elapsedS),
      nsPerDecision: Number(((elapsedS * 1e9) / decisions).toFixed(2)),
      ssmCallsPerMinute: Number(((loadCalls / elapsedS) * 60).toFixed(2)),
    }),
  );
}

main().catch((error: unknown) => exitOnError(error));
