// Reads an AsyncAPI document with the official parser (the one @asyncapi/cli uses) and prints
// every diagnostic; exit 1 when it has an error or yields no document.
//
//   node check.mjs ../../topics/asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';
const parser = new Parser();
const file = process.argv[2];
const { document, diagnostics } = await fromFile(parser, file).parse();
const errors = diagnostics.filter(d => d.severity === 0);
for (const d of diagnostics) {
  console.log(`${['error','warning','info','hint'][d.severity]} ${d.code} ${d.path.join('.')}: ${d.message}`);
}
console.log(document ? `parsed: ${document.info().title()}` : 'no document');
process.exit(errors.length || !document ? 1 : 0);
