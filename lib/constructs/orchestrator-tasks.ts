import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { RETRYABLE_TASK_ERROR } from '../../lambdas/core/migration-error';

/**
 * The errors every orchestrator task tries again: ours that say they are retryable (thrown
 * under one name, see RETRYABLE_TASK_ERROR: no list of class names kept here) and the Lambda
 * service's transient failures.
 */
export const RETRYABLE_ERRORS = [
  RETRYABLE_TASK_ERROR,
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.TooManyRequestsException',
];

/**
 * The building blocks of the state machines: the orchestrator's Lambda tasks (with the Retry
 * every task shares), the input validation that starts each machine, and the failure path.
 * Their constructs are made in `scope` (the MigrationStateMachines construct), so their ids
 * are the state machines' own.
 */
export class OrchestratorTasks {
  constructor(
    private readonly scope: Construct,
    private readonly orchestrator: lambda.IFunction,
  ) {}

  /** A Lambda task of the orchestrator: `{task, actor, …}` in, its result at `resultPath`. */
  task(
    id: string,
    stateName: string,
    task: string,
    resultPath: string | null,
    extra: Record<string, unknown> = {},
  ): tasks.LambdaInvoke {
    const invoke = new tasks.LambdaInvoke(this.scope, id, {
      stateName,
      lambdaFunction: this.orchestrator,
      payloadResponseOnly: true,
      payload: sfn.TaskInput.fromObject({ task, 'actor.$': '$$.Execution.Id', ...extra }),
      resultPath: resultPath === null ? sfn.JsonPath.DISCARD : resultPath,
    });
    invoke.addRetry({
      errors: RETRYABLE_ERRORS,
      interval: Duration.seconds(2),
      maxAttempts: 3,
      backoffRate: 2,
    });
    return invoke;
  }

  /** A task whose every failure goes to `failed` (the failure path) with the error at `$.error`. */
  guardedTask(failed: sfn.IChainable) {
    return (
      id: string,
      stateName: string,
      task: string,
      resultPath: string | null,
      extra: Record<string, unknown> = {},
    ) =>
      this.task(id, stateName, task, resultPath, extra).addCatch(failed, {
        errors: ['States.ALL'],
        resultPath: '$.error',
      });
  }

  /** The first state: validates the execution input, failing with its error and cause. */
  validation(prefix: string, task: string): { validate: tasks.LambdaInvoke } {
    const validate = new tasks.LambdaInvoke(this.scope, `${prefix}ValidateInput`, {
      stateName: 'Validate input',
      lambdaFunction: this.orchestrator,
      payloadResponseOnly: true,
      payload: sfn.TaskInput.fromObject({ task, 'input.$': '$' }),
      resultPath: '$.request',
    });
    validate.addCatch(
      new sfn.Fail(this.scope, `${prefix}InvalidInput`, {
        stateName: 'Input is invalid',
        errorPath: '$.error.Error',
        causePath: '$.error.Cause',
      }),
      { errors: ['States.ALL'], resultPath: '$.error' },
    );
    return { validate };
  }

  /** Where every task's failure goes: recorded (and this run's lock released), then Fail. */
  failurePath(prefix: string): sfn.IChainable {
    const record = new tasks.LambdaInvoke(this.scope, `${prefix}RecordFailure`, {
      stateName: 'Record the failure',
      lambdaFunction: this.orchestrator,
      payloadResponseOnly: true,
      payload: sfn.TaskInput.fromObject({
        task: 'record-failure',
        'actor.$': '$$.Execution.Id',
        'error.$': '$.error',
      }),
      resultPath: '$.failure',
    });
    return record.next(
      new sfn.Fail(this.scope, `${prefix}Failed`, {
        stateName: 'Failed',
        errorPath: '$.failure.Error',
        causePath: '$.failure.Cause',
      }),
    );
  }
}
