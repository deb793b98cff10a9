//! The local EVM chain the stack runs (`scripts/stack up --evm`): a real node answering
//! JSON-RPC, with the test stablecoin and a Multicall3 deployed at its start.

use chimera_tests::chain::LocalChain;
use chimera_tests::stack_env;
use serde_json::{Value, json};

async fn rpc(method: &str, params: Value) -> Value {
    LocalChain::from_env().rpc(method, params).await
}

/// `eth_call` of `data` on `to`, as a number.
async fn call_number(to: &str, data: &str) -> u128 {
    let result = rpc("eth_call", json!([{"to": to, "data": data}, "latest"])).await;
    let hex = result.as_str().expect("hex").trim_start_matches("0x");
    u128::from_str_radix(hex.trim_start_matches('0'), 16).unwrap_or(0)
}

#[tokio::test]
async fn the_local_chain_has_a_six_decimal_stablecoin_and_a_multicall3() {
    let chain_id = rpc("eth_chainId", json!([])).await;
    assert_eq!(
        u64::from_str_radix(chain_id.as_str().unwrap().trim_start_matches("0x"), 16).unwrap(),
        stack_env("CHIMERA_EVM_CHAIN_ID").parse::<u64>().unwrap()
    );
    let token = stack_env("CHIMERA_EVM_TOKEN");
    // decimals()
    assert_eq!(call_number(&token, "0x313ce567").await, 6);
    // totalSupply(): a million test dollars minted to the funder.
    assert_eq!(
        call_number(&token, "0x18160ddd").await,
        1_000_000 * 1_000_000
    );
    let multicall = stack_env("CHIMERA_EVM_MULTICALL3");
    let code = rpc("eth_getCode", json!([multicall, "latest"])).await;
    assert!(code.as_str().unwrap().len() > 2, "Multicall3 has code");
    // getBlockNumber(): the deployments are mined.
    assert!(call_number(&multicall, "0x42cbb15c").await >= 3);
}
