// Azure Managed Redis (Microsoft.Cache/redisEnterprise) holding the gateway's shared state:
// cooldowns and consumer limits across every instance (DESIGN §11). Deployed by main.bicep only
// when deployRedis is true.
//
// - TLS only (clientProtocol Encrypted), port 10000: GATEWAY_STATE=rediss://<hostName>:10000.
// - Entra authentication only: access keys are disabled and the app's user-assigned identity
//   gets data access through an access policy assignment (redis-access.bicep);
//   GATEWAY_STATE_AUTH=managed-identity.
// - EnterpriseCluster: one endpoint that routes every command itself, which the gateway's plain
//   (not cluster-aware) client needs; its keys share one hash tag (routing/state/redis_store.py).
//   The clustering policy cannot change without deleting the database.
// - NoEviction: every key of the gateway expires on its own; evicting a quota counter under
//   memory pressure would silently reset a consumer's quota. A full database refuses writes
//   instead, and the gateway then serves from per-instance state (and logs it).

@description('Name of the cluster (1-60 letters, digits and hyphens).')
@minLength(1)
@maxLength(60)
param name string

@description('Location of the cluster.')
param location string = resourceGroup().location

@description('Tags applied to the cluster.')
param tags object = {}

@description('SKU, e.g. Balanced_B0 (smallest), Balanced_B1, MemoryOptimized_M10, ComputeOptimized_X3. Not an @allowed list: Azure adds SKUs, and ARM rejects an unknown one.')
param skuName string = 'Balanced_B0'

@description('Replicate the data (higher availability SLA, twice the cost). Off only for dev/test.')
param highAvailability bool = true

@description('Object (principal) id of the Function App identity that gets data access.')
param identityPrincipalId string

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: highAvailability ? 'Enabled' : 'Disabled'
    // A Flex Consumption app without VNet integration reaches the cluster over its public endpoint
    // (TLS, Entra tokens only; no access keys). Required from API version 2025-07-01.
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cluster
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    clusteringPolicy: 'EnterpriseCluster'
    evictionPolicy: 'NoEviction'
    accessKeysAuthentication: 'Disabled'
  }
}

module appAccess 'redis-access.bicep' = {
  name: take('${name}-app-access', 64)
  params: {
    clusterName: cluster.name
    databaseName: database.name
    principalId: identityPrincipalId
  }
}

output name string = cluster.name
output id string = cluster.id
output hostName string = cluster.properties.hostName
