import {
  GetParameterCommand,
  ParameterNotFound,
  PutParameterCommand,
  type SSMClient,
} from '@aws-sdk/client-ssm';
import type { ParameterPort } from '../../ports/parameters';

/** The parameter port over SSM Parameter Store (plain `String` parameters). */
export class SsmParameters implements ParameterPort {
  constructor(private readonly client: SSMClient) {}

  async get(name: string): Promise<string | undefined> {
    try {
      const out = await this.client.send(new GetParameterCommand({ Name: name }));
      return out.Parameter?.Value;
    } catch (error) {
      // Absence is an answer, not a failure; anything else (throttling, access) must surface.
      if (error instanceof ParameterNotFound || (error as { name?: unknown })?.name === 'ParameterNotFound') {
        return undefined;
      }
      throw error;
    }
  }

  async put(name: string, value: string): Promise<void> {
    await this.client.send(
      new PutParameterCommand({ Name: name, Value: value, Type: 'String', Overwrite: true }),
    );
  }
}
