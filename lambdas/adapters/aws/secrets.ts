import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import type { ResolvedCredentials } from '../../core/db';
import { DatabaseSecretError } from '../../core/errors';

/**
 * The JSON that RDS-managed and RDS-generated secrets hold. Extra fields (engine,
 * dbInstanceIdentifier, …) are allowed and ignored.
 */
const rdsSecretSchema = z.object({
  username: z.string().min(1),
  password: z.string().min(1),
  host: z.string().min(1).optional(),
  port: z.coerce.number().int().min(1).max(65535).optional(),
  dbname: z.string().min(1).optional(),
});

/** Secret values that failed are not cached: the next call asks Secrets Manager again. */
const cache = new Map<string, Promise<ResolvedCredentials>>();
let defaultClient: SecretsManagerClient | undefined;

/**
 * Turns a secret string into credentials. Errors name the secret and the bad fields only:
 * neither the secret text nor the JSON parser's message (which quotes the text) is kept.
 */
export function parseDatabaseSecret(
  secretArn: string,
  secretString: string | undefined,
): ResolvedCredentials {
  if (secretString === undefined) {
    throw new DatabaseSecretError(secretArn, 'it has no SecretString (binary secrets are not supported)');
  }
  let json: unknown;
  try {
    json = JSON.parse(secretString);
  } catch {
    throw new DatabaseSecretError(secretArn, 'its SecretString is not JSON');
  }
  const parsed = rdsSecretSchema.safeParse(json);
  if (!parsed.success) {
    // Field names and the kind of problem only; zod messages here never quote the value.
    const fields = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'} (${i.code})`);
    throw new DatabaseSecretError(
      secretArn,
      `it does not hold {username, password, host?, port?, dbname?}: bad ${fields.join(', ')}`,
    );
  }
  const { username, password, host, port, dbname } = parsed.data;
  return { user: username, password, host, port, database: dbname };
}

/**
 * Fetches and parses a database secret, once per container (Lambda keeps the module between
 * invocations); concurrent callers share one request. The secret is never logged.
 */
export function fetchDatabaseCredentials(
  secretArn: string,
  client: SecretsManagerClient = (defaultClient ??= new SecretsManagerClient({})),
): Promise<ResolvedCredentials> {
  const cached = cache.get(secretArn);
  if (cached) return cached;
  const pending = (async () => {
    let secretString: string | undefined;
    try {
      const out = await client.send(new GetSecretValueCommand({ SecretId: secretArn }));
      secretString = out.SecretString;
    } catch (cause) {
      const name = (cause as { name?: string }).name ?? 'Error';
      throw new DatabaseSecretError(secretArn, `GetSecretValue failed (${name})`, {
        cause,
        retryable: !['AccessDeniedException', 'ResourceNotFoundException', 'DecryptionFailure'].includes(
          name,
        ),
      });
    }
    return parseDatabaseSecret(secretArn, secretString);
  })();
  cache.set(secretArn, pending);
  pending.catch(() => cache.delete(secretArn));
  return pending;
}

/**
 * Fetches a database secret again, bypassing the cache (what a pool does once after its
 * password is refused: the secret was rotated); the cache then holds the new value.
 */
export function refreshDatabaseCredentials(
  secretArn: string,
  client?: SecretsManagerClient,
): Promise<ResolvedCredentials> {
  cache.delete(secretArn);
  return fetchDatabaseCredentials(secretArn, client);
}

/** Forgets cached credentials (after a rotation, or between tests). */
export function clearDatabaseCredentialsCache(): void {
  cache.clear();
}
