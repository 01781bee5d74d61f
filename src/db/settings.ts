// Session settings tidemark pins wherever it evaluates the plan's expressions (pure: no driver import).

/**
 * Settings that change how values print, pinned identically for every tidemark session: the copy casts through
 * them and the checksum hashes their output, so no worker's environment may change a result. TimeZone and
 * search_path are the database's own (set them with ALTER DATABASE/ROLE … SET): `options` in a connection string
 * (and PGOPTIONS) are replaced, not merged — a worker with `-c TimeZone=America/New_York` in its URL once shifted
 * every timestamp ↔ timestamptz mapping by five hours and the checksum, computed in the same session, agreed.
 */
export const PINNED_SETTINGS: Record<string, string> = {
  DateStyle: 'ISO, MDY',
  IntervalStyle: 'postgres',
  // Shortest exact float output: 0.3 and 0.30000000000000004 print differently.
  extra_float_digits: '3',
};
