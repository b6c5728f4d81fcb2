import {
  LOCAL_TASK_TIMEOUT_SECONDS,
  withAwsTaskTimeouts,
} from '../../../../lambdas/adapters/local/local-state-machines';

describe('withAwsTaskTimeouts (local runs keep AWS’s task timeout semantics)', () => {
  const definition = {
    StartAt: 'Backup',
    States: {
      Backup: { Type: 'Task', Resource: 'arn:aws:lambda:local-1:0:function:o', Next: 'Bounded' },
      Bounded: { Type: 'Task', Resource: 'arn:x', TimeoutSeconds: 30, Next: 'ByPath' },
      ByPath: { Type: 'Task', Resource: 'arn:x', TimeoutSecondsPath: '$.t', Next: 'Fan' },
      Fan: {
        Type: 'Parallel',
        Branches: [{ StartAt: 'Inner', States: { Inner: { Type: 'Task', Resource: 'arn:x', End: true } } }],
        Next: 'Each',
      },
      Each: {
        Type: 'Map',
        ItemProcessor: { StartAt: 'Item', States: { Item: { Type: 'Task', Resource: 'arn:x', End: true } } },
        Next: 'Pause',
      },
      Pause: { Type: 'Wait', Seconds: 1, End: true },
    },
  };

  it('gives every Task without a timeout the longest one a local timer holds (not the library’s 60 s)', () => {
    const out = withAwsTaskTimeouts(definition) as typeof definition;
    expect(out.States.Backup).toMatchObject({ TimeoutSeconds: LOCAL_TASK_TIMEOUT_SECONDS });
    expect(out.States.Fan.Branches[0].States.Inner).toMatchObject({
      TimeoutSeconds: LOCAL_TASK_TIMEOUT_SECONDS,
    });
    expect(out.States.Each.ItemProcessor.States.Item).toMatchObject({
      TimeoutSeconds: LOCAL_TASK_TIMEOUT_SECONDS,
    });
    // A longer delay would make Node's timer fire at once: the timeout must fit in it.
    expect(LOCAL_TASK_TIMEOUT_SECONDS * 1000).toBeLessThanOrEqual(2 ** 31 - 1);
    expect(LOCAL_TASK_TIMEOUT_SECONDS).toBeGreaterThan(24 * 24 * 3600);
  });

  it('keeps the timeouts a definition sets, touches no other state, and leaves the input as it was', () => {
    const before = JSON.stringify(definition);
    const out = withAwsTaskTimeouts(definition) as typeof definition;
    expect(out.States.Bounded.TimeoutSeconds).toBe(30);
    expect(out.States.ByPath).not.toHaveProperty('TimeoutSeconds');
    expect(out.States.Pause).toEqual({ Type: 'Wait', Seconds: 1, End: true });
    expect(JSON.stringify(definition)).toBe(before);
  });
});
