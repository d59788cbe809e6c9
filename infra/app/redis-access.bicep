// Data access for one identity on an Azure Managed Redis database through Microsoft Entra ID
// (GATEWAY_STATE_AUTH=managed-identity, DESIGN §11): an access policy assignment of the built-in
// `default` policy (the only one Azure Managed Redis supports) to the identity's object
// (principal) id. The identity then authenticates with an Entra token for
// https://redis.azure.com/.default; no access key is involved.
//
// Used by redis.bicep for the cluster this template deploys, and by main.bicep, scoped to the
// cluster's own resource group, for an existing cluster (redisResourceId).

@description('Name of the Azure Managed Redis cluster (Microsoft.Cache/redisEnterprise).')
param clusterName string

@description('Database of the cluster; Azure Managed Redis has one, named default.')
param databaseName string = 'default'

@description('Object (principal) id of the identity that gets data access: the gateway app\'s user-assigned identity.')
param principalId string

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' existing = {
  name: clusterName
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' existing = {
  parent: cluster
  name: databaseName
}

resource accessPolicyAssignment 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = {
  parent: database
  // The API's name pattern is ^[A-Za-z0-9]{1,60}$ (az CLI enforces it): a GUID without hyphens,
  // stable per database and identity, so a second provision updates rather than duplicates.
  name: replace(guid(database.id, principalId, 'default'), '-', '')
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: principalId
    }
  }
}

output hostName string = cluster.properties.hostName
