function defaultRandom(): string {
  return randomBytes(4).toString('hex');
}

async function waitForExecution(
  sfn: SFNClient,
  executionArn: string,
  timeoutSeconds: number,
  deps: OpsDeps,
  which: StateMachineKey,
): Promise<{ status: string; output?: string; error?: string; cause?: string }> {
  const sleep = deps.sleep ?? ((ms: number) => sleepMs(ms));
  const pollMs = deps.pollMs ?? 2000;
  const deadline = deps.now().getTime() + timeoutSeconds * 1000;
  for (;;) {
    let out;
    try {
      out = await sfn.send(new DescribeExecutionCommand({ executionArn }));
    } catch (error) {
      throw describeAwsError('DescribeExecution', error, which, { executionArn });
    }
    const status = out.status ?? 'RUNNING';
    if (TERMINAL.has(status)) return { status, output: out.output, error: out.error, cause: out.cause };
    if (deps.now().getTime() >= deadline) return { status };
    await sleep(pollMs);
  }
}
