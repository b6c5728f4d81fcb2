import { GetParameterCommand, GetParametersCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import {
  bucketOf,
  TRAFFIC_PARAMETER_INVALID_METRIC,
  TrafficRouter,
  type TrafficParameterReport,
  type TrafficRouterOptions,
} from '../../client';
import { MemoryParameters } from '../../lambdas/adapters/local/memory-parameters';
import { TrafficParameterError } from '../../lambdas/core/errors';
import { parameterNames } from '../../lambdas/ports/parameters';

const prefix = '/test/migration';
const names = parameterNames(prefix);
const keys = Array.from({ length: 100_000 }, (_, i) => `tenant-${i}`);

const v2Share = (router: TrafficRouter) =>
  (100 * keys.filter((k) => router.route(k) === 'v2').length) / keys.length;

function recorder() {
  const reports: TrafficParameterReport[] = [];
  const metrics: [string, number][] = [];
  const hooks: Pick<TrafficRouterOptions, 'onInvalid' | 'onMetric'> = {
    onInvalid: (r) => reports.push(r),
    onMetric: (name, value) => metrics.push([name, value]),
  };
  return { reports, metrics, hooks };
}

/** A router over an in-memory store, already loaded with `percentage`, `dualWrite` and `writePrimary`. */
async function memoryRouter(
  percentage: string | undefined,
  dualWrite: string | undefined = 'on',
  writePrimary: string | null = 'v1',
) {
  const store = new MemoryParameters();
  if (percentage !== undefined) await store.put(names.trafficPercentage, percentage);
  if (dualWrite !== undefined) await store.put(names.dualWrite, dualWrite);
  if (writePrimary !== null) await store.put(names.writePrimary, writePrimary);
  const rec = recorder();
  const router = TrafficRouter.fromParameters(store, { prefix, ...rec.hooks });
  await router.refresh();
  return { store, router, ...rec };
}

/** Reference implementation of the documented bucket recipe, over Node's own UTF-8 encoder. */
function referenceBucket(key: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(key, 'utf8')) h = Math.imul(h ^ byte, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % 100;
}

describe('bucketOf', () => {
  it('hashes the UTF-8 bytes of any key, unicode and lone surrogates included', () => {
    const samples = [
      '',
      'a',
      'tenant-42',
      'é',
      'Ωmega',
      '日本の機器',
      '😀device',
      'x\ud800y',
      'tail\udc00',
      '\ud83d',
    ];
    for (const key of [...samples, ...keys.slice(0, 1000)]) {
      expect([key, bucketOf(key)]).toEqual([key, referenceBucket(key)]);
    }
  });
});

describe('TrafficRouter routing', () => {
  it.each([10, 25, 50])('sends %i%% of 100,000 keys to V2, within one point', async (pct) => {
    const { router } = await memoryRouter(String(pct));
    const share = v2Share(router);
    expect(share).toBeGreaterThanOrEqual(pct - 1);
    expect(share).toBeLessThanOrEqual(pct + 1);
  });

  it('sends every key to V1 at 0 and every key to V2 at 100', async () => {
    const { store, router } = await memoryRouter('0');
    expect(v2Share(router)).toBe(0);
    await store.put(names.trafficPercentage, '100');
    await router.refresh();
    expect(v2Share(router)).toBe(100);
  });

  it('routes a key the same way every time, across routers', async () => {
    const a = (await memoryRouter('50')).router;
    const b = (await memoryRouter('50')).router;
    const first = keys.slice(0, 5000).map((k) => a.route(k));
    expect(keys.slice(0, 5000).map((k) => a.route(k))).toEqual(first);
    expect(keys.slice(0, 5000).map((k) => b.route(k))).toEqual(first);
    expect(new Set(first)).toEqual(new Set(['v1', 'v2']));
  });

  it('never moves a key from V2 back to V1 while the percentage rises 0 → 10 → 25 → 50 → 100', async () => {
    const { store, router } = await memoryRouter('0');
    let previous = keys.map((k) => router.route(k));
    for (const pct of ['10', '25', '50', '100']) {
      await store.put(names.trafficPercentage, pct);
      await router.refresh();
      const current = keys.map((k) => router.route(k));
      const movedBack = keys.filter((_, i) => previous[i] === 'v2' && current[i] === 'v1');
      expect([pct, movedBack.length]).toEqual([pct, 0]);
      expect(current.filter((t) => t === 'v2').length).toBeGreaterThan(
        previous.filter((t) => t === 'v2').length,
      );
      previous = current;
    }
  });

  it('answers for a key that is not a string instead of throwing', async () => {
    const { router } = await memoryRouter('50');
    expect(['v1', 'v2']).toContain(router.route(undefined as unknown as string));
    expect(router.route(12345 as unknown as string)).toBe(router.route('12345'));
  });

  it('reads dual-write as on or off', async () => {
    const { store, router } = await memoryRouter('10', 'on');
    expect(router.dualWriteEnabled()).toBe(true);
    await store.put(names.dualWrite, 'off');
    await router.refresh();
    expect(router.dualWriteEnabled()).toBe(false);
    expect(router.snapshot()).toEqual(expect.objectContaining({ percentage: 10, dualWrite: false }));
  });

  it('reads the write primary as v1 or v2', async () => {
    const { store, router, reports } = await memoryRouter('100', 'on', 'v1');
    expect(router.writePrimary()).toBe('v1');
    await store.put(names.writePrimary, 'v2');
    await router.refresh();
    expect(router.writePrimary()).toBe('v2');
    expect(router.snapshot()).toEqual(expect.objectContaining({ percentage: 100, writePrimary: 'v2' }));
    expect(reports).toEqual([]);
  });

  it.each(['V2', 'v3', '', 'primary'])(
    'keeps the last good write primary when the value is %j, and reports it',
    async (bad) => {
      const { store, router, reports } = await memoryRouter('100', 'on', 'v2');
      await store.put(names.writePrimary, bad);
      await router.refresh();
      expect(router.writePrimary()).toBe('v2');
      expect(reports.map((r) => [r.parameter, r.problem, r.value, r.kept])).toEqual([
        [names.writePrimary, 'invalid', bad, 'v2'],
      ]);
      expect(reports[0].error.message).toContain('must be "v1" or "v2"');
    },
  );

  it('starts at v1 when the write primary parameter is missing, and reports it', async () => {
    const { router, reports } = await memoryRouter('0', 'off', null);
    expect(router.writePrimary()).toBe('v1');
    expect(reports.map((r) => [r.parameter, r.problem, r.kept])).toEqual([
      [names.writePrimary, 'missing', 'v1'],
    ]);
  });
});

describe('TrafficRouter with unusable parameters', () => {
  it.each(['abc', '150', '-1', '', '12.5', ' 5', '5 ', '05', '+5', '1e1'])(
    'keeps the last good percentage when the value is %j, and reports it',
    async (bad) => {
      const { store, router, reports, metrics } = await memoryRouter('25');
      const before = keys.slice(0, 2000).map((k) => router.route(k));

      await store.put(names.trafficPercentage, bad);
      await router.refresh();

      expect(router.snapshot().percentage).toBe(25);
      expect(keys.slice(0, 2000).map((k) => router.route(k))).toEqual(before);
      expect(reports).toEqual([
        expect.objectContaining({
          parameter: names.trafficPercentage,
          problem: 'invalid',
          value: bad,
          kept: 25,
        }),
      ]);
      expect(reports[0].error).toBeInstanceOf(TrafficParameterError);
      expect(reports[0].error.name).toBe('TrafficParameterError');
      expect(reports[0].error.message).toContain(names.trafficPercentage);
      expect(metrics).toEqual([[TRAFFIC_PARAMETER_INVALID_METRIC, 1]]);
      expect(router.snapshot().lastError).toBe(reports[0].error);
    },
  );

  it('uses 0 and off when no good value was ever read', async () => {
    const { router, reports } = await memoryRouter('abc', 'maybe');
    expect(router.snapshot()).toEqual(expect.objectContaining({ percentage: 0, dualWrite: false }));
    expect(v2Share(router)).toBe(0);
    expect(reports.map((r) => [r.parameter, r.problem, r.value, r.kept])).toEqual([
      [names.trafficPercentage, 'invalid', 'abc', 0],
      [names.dualWrite, 'invalid', 'maybe', false],
    ]);
  });

  it.each(['ON', 'true', '', ' on'])('keeps the last good dual-write when the value is %j', async (bad) => {
    const { store, router, reports, metrics } = await memoryRouter('10', 'on');
    await store.put(names.dualWrite, bad);
    await router.refresh();
    expect(router.dualWriteEnabled()).toBe(true);
    expect(reports).toEqual([
      expect.objectContaining({ parameter: names.dualWrite, problem: 'invalid', value: bad, kept: true }),
    ]);
    expect(metrics).toEqual([[TRAFFIC_PARAMETER_INVALID_METRIC, 1]]);
  });

  it('keeps the last good values when a parameter is missing', async () => {
    const { store, router, reports, metrics } = await memoryRouter('50', 'on');
    store.delete(names.trafficPercentage);
    store.delete(names.dualWrite);
    await router.refresh();
    expect(router.snapshot()).toEqual(expect.objectContaining({ percentage: 50, dualWrite: true }));
    expect(reports.map((r) => [r.parameter, r.problem, r.kept])).toEqual([
      [names.trafficPercentage, 'missing', 50],
      [names.dualWrite, 'missing', true],
    ]);
    expect(metrics).toHaveLength(2);
  });

  it('keeps the last good values when the store fails, and recovers on the next good read', async () => {
    const { store, router, reports } = await memoryRouter('50', 'on');
    const outage = Object.assign(new Error('connect ECONNREFUSED'), { name: 'NetworkingError' });
    store.failNext(outage, { op: 'get', times: 2 });
    await router.refresh();
    expect(router.snapshot()).toEqual(expect.objectContaining({ percentage: 50, dualWrite: true }));
    expect(reports.map((r) => [r.parameter, r.problem, r.kept])).toEqual([
      [names.trafficPercentage, 'fetch-failed', 50],
      [names.dualWrite, 'fetch-failed', true],
      [names.writePrimary, 'fetch-failed', 'v1'],
    ]);
    expect(reports[0].error.cause).toBe(outage);

    await store.put(names.trafficPercentage, '10');
    await router.refresh();
    expect(router.snapshot().percentage).toBe(10);
    expect(router.snapshot().lastError).toBeUndefined();
  });

  it('keeps refreshing when a reporting hook throws', async () => {
    const store = new MemoryParameters({ [names.trafficPercentage]: 'bad', [names.dualWrite]: 'on' });
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const router = TrafficRouter.fromParameters(store, {
        prefix,
        onInvalid: () => {
          throw new Error('hook failed');
        },
      });
      await expect(router.refresh()).resolves.toBeUndefined();
      expect(warn).toHaveBeenCalledWith(
        expect.objectContaining({ message: 'hook failed' }),
        expect.any(String),
      );
      await store.put(names.trafficPercentage, '30');
      await router.refresh();
      expect(router.snapshot().percentage).toBe(30);
    } finally {
      warn.mockRestore();
    }
  });
});

describe('TrafficRouter over SSM (Powertools, mocked client)', () => {
  const ssm = mockClient(SSMClient);
  let current: Record<string, string>;

  beforeEach(() => {
    ssm.reset();
    current = { [names.trafficPercentage]: '50', [names.dualWrite]: 'on', [names.writePrimary]: 'v1' };
    ssm.on(GetParametersCommand).callsFake((input: { Names?: string[] }) => {
      const wanted = input.Names ?? [];
      return {
        Parameters: wanted
          .filter((n) => n in current)
          .map((n) => ({ Name: n, Value: current[n], Type: 'String' })),
        InvalidParameters: wanted.filter((n) => !(n in current)),
      };
    });
    jest.useFakeTimers({ doNotFake: ['nextTick', 'queueMicrotask', 'setImmediate'] });
  });
  afterEach(() => {
    jest.useRealTimers();
  });
  afterAll(() => ssm.restore());

  const ssmCalls = () =>
    ssm.commandCalls(GetParametersCommand).length + ssm.commandCalls(GetParameterCommand).length;

  function ssmRouter(refreshMs?: number) {
    const rec = recorder();
    const router = TrafficRouter.fromSsm({
      prefix,
      ssmClient: new SSMClient({ region: 'eu-west-1' }),
      ...(refreshMs === undefined ? {} : { refreshMs }),
      ...rec.hooks,
    });
    return { router, ...rec };
  }

  it('reads the parameters in one call and refreshes in the background, never on route()', async () => {
    const { router } = ssmRouter();
    await router.start();
    try {
      expect(ssmCalls()).toBe(1);
      expect(ssm.commandCalls(GetParametersCommand)[0].args[0].input.Names?.sort()).toEqual(
        [names.dualWrite, names.trafficPercentage, names.writePrimary].sort(),
      );
      expect(router.snapshot()).toEqual(expect.objectContaining({ percentage: 50, dualWrite: true }));

      current[names.trafficPercentage] = '100';
      for (const key of keys.slice(0, 20_000)) router.route(key);
      router.dualWriteEnabled();
      expect(ssmCalls()).toBe(1);
      expect(router.snapshot().percentage).toBe(50);

      await jest.advanceTimersByTimeAsync(9_999);
      expect(ssmCalls()).toBe(1);
      await jest.advanceTimersByTimeAsync(1);
      expect(ssmCalls()).toBe(2);
      expect(v2Share(router)).toBe(100);

      // Each interval reaches SSM: Powertools' cache must not serve a stale value to the timer.
      await jest.advanceTimersByTimeAsync(30_000);
      expect(ssmCalls()).toBe(5);
    } finally {
      router.stop();
    }
    await jest.advanceTimersByTimeAsync(50_000);
    expect(ssmCalls()).toBe(5);
  });

  it('takes a rollback to 0 within one refresh', async () => {
    const { router } = ssmRouter(2_000);
    await router.start();
    try {
      expect(v2Share(router)).toBeGreaterThan(48);
      current[names.trafficPercentage] = '0';
      await jest.advanceTimersByTimeAsync(2_000);
      expect(router.snapshot().percentage).toBe(0);
      expect(v2Share(router)).toBe(0);
    } finally {
      router.stop();
    }
  });

  it('reaches SSM on every tick with an interval shorter than Powertools can cache', async () => {
    const { router } = ssmRouter(500);
    await router.start();
    try {
      current[names.trafficPercentage] = '20';
      await jest.advanceTimersByTimeAsync(500);
      expect(router.snapshot().percentage).toBe(20);
      current[names.trafficPercentage] = '30';
      await jest.advanceTimersByTimeAsync(500);
      expect(router.snapshot().percentage).toBe(30);
      expect(ssmCalls()).toBe(3);
    } finally {
      router.stop();
    }
  });

  it('keeps the last good value and reports it when SSM throttles', async () => {
    const { router, reports, metrics } = ssmRouter();
    await router.start();
    try {
      const throttled = Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
      ssm.on(GetParametersCommand).rejects(throttled);
      await jest.advanceTimersByTimeAsync(10_000);
      expect(ssmCalls()).toBe(2);
      expect(router.snapshot()).toEqual(expect.objectContaining({ percentage: 50, dualWrite: true }));
      expect(reports.map((r) => [r.parameter, r.problem, r.kept])).toEqual([
        [names.trafficPercentage, 'fetch-failed', 50],
        [names.dualWrite, 'fetch-failed', true],
        [names.writePrimary, 'fetch-failed', 'v1'],
      ]);
      expect(reports[0].error.cause).toBe(throttled);
      expect(reports[0].error.message).toContain('ThrottlingException');
      expect(metrics).toEqual([
        [TRAFFIC_PARAMETER_INVALID_METRIC, 1],
        [TRAFFIC_PARAMETER_INVALID_METRIC, 1],
        [TRAFFIC_PARAMETER_INVALID_METRIC, 1],
      ]);
      expect(router.snapshot().lastError?.problem).toBe('fetch-failed');
    } finally {
      router.stop();
    }
  });

  it('starts at 0 and off, and reports, when SSM is unreachable from the first load', async () => {
    const unreachable = Object.assign(new Error('getaddrinfo ENOTFOUND ssm.eu-west-1.amazonaws.com'), {
      name: 'TimeoutError',
      code: 'ENOTFOUND',
    });
    ssm.on(GetParametersCommand).rejects(unreachable);
    const { router, reports } = ssmRouter();
    await expect(router.start()).resolves.toBeUndefined();
    router.stop();
    expect(router.snapshot()).toEqual(expect.objectContaining({ percentage: 0, dualWrite: false }));
    expect(v2Share(router)).toBe(0);
    expect(reports.map((r) => [r.problem, r.kept])).toEqual([
      ['fetch-failed', 0],
      ['fetch-failed', false],
      ['fetch-failed', 'v1'],
    ]);
    expect(reports[1].error.cause).toBe(unreachable);
  });

  it('keeps the last good value when SSM reports a parameter as missing or invalid', async () => {
    const { router, reports } = ssmRouter();
    await router.start();
    try {
      delete current[names.trafficPercentage];
      current[names.dualWrite] = 'yes';
      current[names.writePrimary] = 'both';
      await jest.advanceTimersByTimeAsync(10_000);
      expect(router.snapshot()).toEqual(
        expect.objectContaining({ percentage: 50, dualWrite: true, writePrimary: 'v1' }),
      );
      expect(reports.map((r) => [r.parameter, r.problem, r.value])).toEqual([
        [names.trafficPercentage, 'missing', undefined],
        [names.dualWrite, 'invalid', 'yes'],
        [names.writePrimary, 'invalid', 'both'],
      ]);
    } finally {
      router.stop();
    }
  });

  it('lets refresh() bypass the cache for an immediate reload', async () => {
    const { router } = ssmRouter();
    await router.start();
    current[names.trafficPercentage] = '5';
    await router.refresh();
    router.stop();
    expect(ssmCalls()).toBe(2);
    expect(router.snapshot().percentage).toBe(5);
  });
});
