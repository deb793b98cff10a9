// Deploys the test stablecoin (TestUSD, 6 decimals) and a Multicall3 to the local chain at
// --rpc, compiled here with the WASM compiler of npm `solc` (no compiler download), mints the
// stablecoin to the first development account, and writes what it deployed as JSON to --out.
import { readFileSync, writeFileSync, renameSync } from "node:fs";
import { parseArgs } from "node:util";
import solc from "solc";
import { createPublicClient, createWalletClient, http, defineChain } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const { values } = parseArgs({
  options: { rpc: { type: "string" }, out: { type: "string" }, "chain-id": { type: "string", default: "31337" } },
});
if (!values.rpc || !values.out) {
  console.error("usage: node deploy.mjs --rpc URL --out FILE [--chain-id N]");
  process.exit(2);
}

// The first of the development node's well-known accounts (test mnemonic; never real money).
const DEPLOYER = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

const sources = {};
for (const name of ["TestUSD", "Multicall3"]) {
  sources[`${name}.sol`] = { content: readFileSync(new URL(`./contracts/${name}.sol`, import.meta.url), "utf8") };
}
const compiled = JSON.parse(
  solc.compile(
    JSON.stringify({
      language: "Solidity",
      sources,
      settings: { optimizer: { enabled: true, runs: 200 }, outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } },
    }),
  ),
);
const errors = (compiled.errors ?? []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}

const chain = defineChain({
  id: Number(values["chain-id"]),
  name: "chimera-local",
  nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [values.rpc] } },
});
const account = privateKeyToAccount(DEPLOYER);
const wallet = createWalletClient({ account, chain, transport: http(values.rpc) });
const reader = createPublicClient({ chain, transport: http(values.rpc) });

async function deploy(name) {
  const { abi, evm } = compiled.contracts[`${name}.sol`][name];
  const hash = await wallet.deployContract({ abi, bytecode: `0x${evm.bytecode.object}` });
  const receipt = await reader.waitForTransactionReceipt({ hash });
  return { address: receipt.contractAddress, abi };
}

const token = await deploy("TestUSD");
const multicall3 = await deploy("Multicall3");
// A million test dollars for the deployer, who funds agents' wallets.
const minted = await wallet.writeContract({
  address: token.address,
  abi: token.abi,
  functionName: "mint",
  args: [account.address, 1_000_000n * 1_000_000n],
});
await reader.waitForTransactionReceipt({ hash: minted });

const deployed = {
  chain_id: chain.id,
  rpc_url: values.rpc,
  token: token.address,
  token_decimals: 6,
  multicall3: multicall3.address,
  funder: account.address,
};
writeFileSync(`${values.out}.tmp`, `${JSON.stringify(deployed, null, 2)}\n`);
renameSync(`${values.out}.tmp`, values.out);
console.log(JSON.stringify(deployed));
