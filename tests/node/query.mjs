// Runs one query with the official `trino-client` package and prints its columns and rows
// as JSON: node query.mjs SERVER USER SQL
import { BasicAuth, Trino } from 'trino-client';

const [server, user, sql] = process.argv.slice(2);
const trino = Trino.create({ server, catalog: 'tpch', schema: 'tiny', auth: new BasicAuth(user) });
const results = await trino.query(sql);
let columns = [];
const rows = [];
for await (const result of results) {
  if (result.error) {
    console.error(JSON.stringify(result.error));
    process.exit(1);
  }
  if (result.columns) columns = result.columns.map((c) => c.name);
  if (result.data) rows.push(...result.data);
}
console.log(JSON.stringify({ columns, rows }));
