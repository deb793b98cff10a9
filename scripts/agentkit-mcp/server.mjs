// A thin stdio MCP server over Coinbase AgentKit's actions: one agent's wallet on an EVM chain.
//
// AgentKit has no MCP package in the registry; this serves its wallet and ERC-20 actions
// (`agentkit.getActions()`, through its viem wallet provider: no Coinbase key) as MCP tools
// under their own names and argument schemas, and adds what an effect ledger needs:
// - every answer is structured (`structuredContent`): a transfer's hash, block, status, payee
//   and amount as the chain's receipt says, a balance in the token's units and in cents;
// - a failure says whether anything reached the chain: `refused` (nothing was sent: not
//   retryable), `reverted` (mined, moved nothing), `outcome_unknown` (a transaction was sent
//   and its receipt could not be read: look it up before sending again);
// - transfers take an optional `chainId`, refused when it is not this chain's (an approval
//   binds the chain);
// - `find_transfers` lists the wallet's token transfers from the chain's logs (hash, nonce,
//   payee, amount) and how many of its transactions are still pending: how a transfer whose
//   answer was lost is found instead of sent twice.
//
// Configuration (environment): WALLET_PRIVATE_KEY (the agent's key, from its secret; without
// one the server lists its tools and refuses every call: how a client checks its bindings),
// EVM_RPC_URL, EVM_CHAIN_ID, EVM_MULTICALL3 (AgentKit's ERC-20 actions read token details
// through it), EVM_TOKEN (the stablecoin ERC-20 actions default to), RECEIPT_TIMEOUT_MS.
//
// Run with `node --unhandled-rejections=warn`. stdout is the MCP channel: everything else goes
// to stderr.

import { AsyncLocalStorage } from "node:async_hooks";

console.log = console.info = console.debug = (...args) => console.error(...args);

// AgentKit reports each wallet construction and each action to a Coinbase host, un-awaited
// (no setting turns it off); offline the rejection would kill the process. This server talks
// to the chain's RPC only: that report is answered here and goes nowhere.
const ANALYTICS_HOST = "cca-lite.coinbase.com";
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init) => {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  if (new URL(url).hostname === ANALYTICS_HOST) {
    return Promise.resolve(new Response(null, { status: 204 }));
  }
  return realFetch(input, init);
};

const { AgentKit, ViemWalletProvider, walletActionProvider, erc20ActionProvider } = await import("@coinbase/agentkit");
const { createPublicClient, createWalletClient, defineChain, erc20Abi, http, keccak256, nonceManager, parseEventLogs } =
  await import("viem");
const { generatePrivateKey, privateKeyToAccount } = await import("viem/accounts");
const { zodToJsonSchema } = await import("zod-to-json-schema");
const { Server } = await import("@modelcontextprotocol/sdk/server/index.js");
const { StdioServerTransport } = await import("@modelcontextprotocol/sdk/server/stdio.js");
const { CallToolRequestSchema, ListToolsRequestSchema } = await import("@modelcontextprotocol/sdk/types.js");

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`agentkit-mcp: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const RPC = required("EVM_RPC_URL");
const CHAIN_ID = Number(required("EVM_CHAIN_ID"));
const MULTICALL3 = required("EVM_MULTICALL3");
const TOKEN = process.env.EVM_TOKEN || null;
const RECEIPT_TIMEOUT_MS = Number(process.env.RECEIPT_TIMEOUT_MS || 10_000);
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

const chain = defineChain({
  id: CHAIN_ID,
  name: `evm-${CHAIN_ID}`,
  nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [RPC] } },
  contracts: { multicall3: { address: MULTICALL3 } },
});

// Which transactions a tool call broadcast: the transport notes the hash of every raw
// transaction it hands to the chain, for the call it runs in, before the chain answers. A call
// that fails afterwards is then known to have sent something.
const calls = new AsyncLocalStorage();
const rpc = http(RPC, { retryCount: 1, timeout: 10_000 });
const watched = (options) => {
  const transport = rpc(options);
  return {
    ...transport,
    async request(args) {
      if (args.method === "eth_sendRawTransaction") {
        calls.getStore()?.sent.push(keccak256(args.params[0]));
      }
      return transport.request(args);
    },
  };
};

// Without a key the actions are built on a throwaway one, for their schemas only.
const KEYLESS = !process.env.WALLET_PRIVATE_KEY;
const account = privateKeyToAccount(process.env.WALLET_PRIVATE_KEY || generatePrivateKey(), { nonceManager });
const reader = createPublicClient({ chain, transport: http(RPC, { retryCount: 1, timeout: 10_000 }) });
const walletProvider = new ViemWalletProvider(createWalletClient({ account, chain, transport: watched }), {
  rpcUrl: RPC,
});
const agentkit = await AgentKit.from({
  walletProvider,
  actionProviders: [walletActionProvider(), erc20ActionProvider()],
});
const actions = new Map(agentkit.getActions().map((a) => [a.name, a]));

const TRANSFERS = new Set(["WalletActionProvider_native_transfer", "ERC20ActionProvider_transfer", "ERC20ActionProvider_approve"]);
const ERC20 = (name) => name.startsWith("ERC20ActionProvider_");
// AgentKit's own description names fields the schema does not have.
const DESCRIPTIONS = {
  WalletActionProvider_native_transfer:
    "Transfers the chain's native currency from this wallet. `to`: the payee's address; `value`: the amount in whole units (e.g. 0.01).",
};

function inputSchema(action) {
  const { $schema, ...schema } = zodToJsonSchema(action.schema, { target: "jsonSchema7", $refStrategy: "none" });
  schema.properties ??= {};
  if (ERC20(action.name) && TOKEN && schema.properties.tokenAddress) {
    schema.required = (schema.required ?? []).filter((f) => f !== "tokenAddress");
    schema.properties.tokenAddress.description = `${schema.properties.tokenAddress.description ?? ""} (default: this server's stablecoin, ${TOKEN})`.trim();
  }
  if (TRANSFERS.has(action.name)) {
    schema.properties.chainId = { type: "integer", description: "The chain the transfer was approved on; refused on any other." };
  }
  return schema;
}

const OWN_TOOLS = [
  {
    name: "find_transfers",
    description:
      "This wallet's ERC-20 transfers on chain (from its logs), oldest first, with each transaction's hash, block and nonce, and how many of the wallet's transactions are still pending.",
    inputSchema: {
      type: "object",
      properties: {
        tokenAddress: { type: "string", pattern: ADDRESS.source, description: TOKEN ? `default ${TOKEN}` : "the token" },
        destinationAddress: { type: "string", pattern: ADDRESS.source, description: "only transfers to this address" },
        fromBlock: { type: "integer", minimum: 0 },
      },
      required: TOKEN ? [] : ["tokenAddress"],
      additionalProperties: false,
    },
  },
];

const server = new Server({ name: "chimera-agentkit-mcp", version: "0.1.0" }, { capabilities: { tools: {} } });

server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [
    ...[...actions.values()].map((a) => ({
      name: a.name,
      description: DESCRIPTIONS[a.name] ?? a.description.trim(),
      inputSchema: inputSchema(a),
    })),
    ...OWN_TOOLS,
  ],
}));

const ok = (structured) => ({
  content: [{ type: "text", text: JSON.stringify(structured) }],
  structuredContent: structured,
});
const failure = (code, retryable, message, extra = {}) => ({
  isError: true,
  content: [{ type: "text", text: message }],
  structuredContent: { code, retryable, message, ...extra },
});

server.setRequestHandler(CallToolRequestSchema, async (request) => {
  const name = request.params.name;
  const args = { ...(request.params.arguments ?? {}) };
  if (KEYLESS) return failure("no_wallet", false, "this server was started without a wallet key: it lists its tools only");
  try {
    if (name === "find_transfers") return await findTransfers(args);
    const action = actions.get(name);
    if (!action) return failure("unknown_tool", false, `no tool ${name}`);
    if (ERC20(name) && TOKEN && args.tokenAddress === undefined) args.tokenAddress = TOKEN;
    if (TRANSFERS.has(name) && args.chainId !== undefined && Number(args.chainId) !== CHAIN_ID) {
      return failure("refused", false, `approved for chain ${args.chainId}; this wallet is on chain ${CHAIN_ID}`);
    }
    const parsed = action.schema.safeParse(args);
    if (!parsed.success) return failure("invalid_arguments", false, parsed.error.message);
    if (TRANSFERS.has(name)) return await transfer(action, parsed.data);
    const text = await action.invoke(parsed.data);
    if (/^Error\b/.test(text)) return failure("refused", false, text);
    if (name === "ERC20ActionProvider_get_balance") return ok(await balance(parsed.data, text));
    return ok({ status: "ok", text });
  } catch (err) {
    console.error(`agentkit-mcp: ${name} failed`, err);
    return failure("internal", true, `${name} failed: ${err?.shortMessage ?? err?.message ?? err}`);
  }
});

const NONCE_TROUBLE = /nonce too low|nonce has already been used|replacement transaction underpriced|already known/i;

// Runs a transfer action and reads its outcome from the chain, whatever AgentKit's words say.
async function transfer(action, args) {
  for (let attempt = 1; ; attempt++) {
    const call = { sent: [] };
    let text;
    try {
      text = await calls.run(call, () => action.invoke(args));
    } catch (err) {
      text = `Error: ${err?.shortMessage ?? err?.message ?? err}`;
    }
    const hash = call.sent.at(-1) ?? text.match(/0x[0-9a-fA-F]{64}/)?.[0];
    if (call.sent.length === 0 && /^Error\b/.test(text)) {
      // Nothing reached the chain. A nonce another call took is worth another go.
      if (NONCE_TROUBLE.test(text) && attempt < 4) {
        account.nonceManager?.reset({ address: account.address, chainId: CHAIN_ID });
        continue;
      }
      return failure("refused", false, text.split("\n")[0]);
    }
    if (!hash) return failure("outcome_unknown", true, `no transaction hash in the answer: ${text.split("\n")[0]}`);
    let receipt;
    try {
      receipt = await reader.waitForTransactionReceipt({ hash, timeout: RECEIPT_TIMEOUT_MS, pollingInterval: 250 });
    } catch (err) {
      return failure(
        "outcome_unknown",
        true,
        `transaction ${hash} was sent and its receipt could not be read: ${err?.shortMessage ?? err?.message ?? err}`,
        { hash },
      );
    }
    const mined = { hash, block: Number(receipt.blockNumber), chain_id: CHAIN_ID, from: account.address.toLowerCase() };
    if (receipt.status !== "success") {
      return failure("reverted", false, `transaction ${hash} was mined in block ${mined.block} and reverted`, mined);
    }
    if (action.name === "ERC20ActionProvider_transfer") {
      const moved = parseEventLogs({ abi: erc20Abi, eventName: "Transfer", logs: receipt.logs }).find(
        (log) => log.args.from.toLowerCase() === mined.from,
      );
      if (!moved) return failure("outcome_unknown", true, `transaction ${hash} logged no transfer from this wallet`, mined);
      const decimals = await tokenDecimals(moved.address);
      return ok({
        status: "confirmed",
        transfer_id: hash,
        ...mined,
        token: moved.address.toLowerCase(),
        to: moved.args.to.toLowerCase(),
        amount_units: moved.args.value.toString(),
        amount_cents: cents(moved.args.value, decimals),
      });
    }
    const tx = await reader.getTransaction({ hash });
    return ok({ status: "confirmed", transfer_id: hash, ...mined, to: tx.to?.toLowerCase() ?? null, amount_wei: tx.value.toString() });
  }
}

const decimalsOf = new Map();
async function tokenDecimals(token) {
  const key = token.toLowerCase();
  if (!decimalsOf.has(key)) {
    decimalsOf.set(key, Number(await reader.readContract({ address: token, abi: erc20Abi, functionName: "decimals" })));
  }
  return decimalsOf.get(key);
}

// Whole cents in `units` of a token of `decimals` decimals (a dollar stablecoin), or null.
function cents(units, decimals) {
  if (decimals < 2) return null;
  const perCent = 10n ** BigInt(decimals - 2);
  return units % perCent === 0n ? Number(units / perCent) : null;
}

async function balance(args, text) {
  const address = args.address ?? account.address;
  const [units, decimals] = await Promise.all([
    reader.readContract({ address: args.tokenAddress, abi: erc20Abi, functionName: "balanceOf", args: [address] }),
    tokenDecimals(args.tokenAddress),
  ]);
  const perCent = decimals >= 2 ? 10n ** BigInt(decimals - 2) : null;
  return {
    status: "ok",
    chain_id: CHAIN_ID,
    address: address.toLowerCase(),
    token: args.tokenAddress.toLowerCase(),
    decimals,
    balance_units: units.toString(),
    balance_cents: perCent === null ? null : Number(units / perCent),
    text,
  };
}

async function findTransfers(args) {
  const token = args.tokenAddress ?? TOKEN;
  for (const [field, value] of [["tokenAddress", token], ["destinationAddress", args.destinationAddress]]) {
    if (value !== undefined && !ADDRESS.test(value ?? "")) return failure("invalid_arguments", false, `${field} is not an address`);
  }
  const [logs, latest, pending, decimals] = await Promise.all([
    reader.getLogs({
      address: token,
      event: erc20Abi.find((e) => e.type === "event" && e.name === "Transfer"),
      args: { from: account.address, ...(args.destinationAddress ? { to: args.destinationAddress } : {}) },
      fromBlock: BigInt(args.fromBlock ?? 0),
      toBlock: "latest",
    }),
    reader.getTransactionCount({ address: account.address, blockTag: "latest" }),
    reader.getTransactionCount({ address: account.address, blockTag: "pending" }),
    tokenDecimals(token),
  ]);
  const transfers = [];
  for (const log of logs) {
    const tx = await reader.getTransaction({ hash: log.transactionHash });
    transfers.push({
      transfer_id: log.transactionHash,
      hash: log.transactionHash,
      block: Number(log.blockNumber),
      nonce: tx.nonce,
      token: token.toLowerCase(),
      to: log.args.to.toLowerCase(),
      amount_units: log.args.value.toString(),
      amount_cents: cents(log.args.value, decimals),
    });
  }
  return ok({
    chain_id: CHAIN_ID,
    address: account.address.toLowerCase(),
    nonce: latest,
    pending: pending - latest,
    transfers,
  });
}

await server.connect(new StdioServerTransport());
console.error(KEYLESS ? `agentkit-mcp: no wallet key; tools listed only` : `agentkit-mcp: wallet ${account.address} on chain ${CHAIN_ID} via ${RPC}`);
