// LLM gateway on Azure Functions (Flex Consumption), provisioned by `azd up`.
// Plain Bicep resources only (no registry modules), so the files parse and scan offline
// (tests/infra: pycep-parser + checkov). Parameters and secrets: infra/README.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds resource names and tags every resource group with azd-env-name.')
param environmentName string

@minLength(1)
@description('Primary location for all resources (a region where Flex Consumption is available).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying principal (azd sets AZURE_PRINCIPAL_ID). Empty: no role for it.')
param principalId string = ''

@description('Type of principalId: User for `azd up` at a desk, ServicePrincipal in CI.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Gateway routes, each {id, model, backend, endpoint, deployment?, apiVersion?, auth?, clientId?, scope?, headers?, params?, priority?, weight?, timeout?, keyHeader?, reasoning?, family?}; each becomes ROUTE__<id>__<FIELD> app settings (DESIGN §3). Never put a key here: use routeApiKeys.')
param routes array = []

@secure()
@description('Route id -> upstream API key. Each non-empty key is stored in Key Vault as route-<id>-api-key and the route gets ROUTE__<id>__API_KEY = a Key Vault reference.')
param routeApiKeys object = {}

@secure()
@description('Comma-separated inbound gateway keys (GATEWAY_API_KEYS), stored in Key Vault. Empty: no key is created and the gateway refuses to start until one is set.')
param gatewayApiKeys string = ''

@description('Consumers (DESIGN §9), each {name, models?, tokensPerMinute?, requestsPerMinute?, tokenQuota?, quotaPeriod?, principals?}; each becomes CONSUMER__<name>__<FIELD> app settings. Never put a key here: use consumerKeys.')
param consumers array = []

@secure()
@description('Consumer name -> comma-separated keys (two allow rotation). Each non-empty value is stored in Key Vault as consumer-<name>-keys and the consumer gets CONSUMER__<name>__KEYS = a Key Vault reference.')
param consumerKeys object = {}

@description('GATEWAY_AUTH: keys (GATEWAY_API_KEYS and consumer keys), entra (Entra tokens of the consumers\' principals), both, or none (only behind another authenticating layer).')
@allowed([
  'keys'
  'entra'
  'keys,entra'
  'none'
])
param gatewayAuth string = 'keys'

@description('GATEWAY_ENTRA_TENANT: tenant id whose tokens are accepted. Empty: the tenant of this deployment. Set only when gatewayAuth includes entra.')
param gatewayEntraTenant string = ''

@description('GATEWAY_ENTRA_AUDIENCE: the gateway app registration\'s Application ID URI and/or client id, comma-separated. Required (by the gateway) when gatewayAuth includes entra.')
param gatewayEntraAudience string = ''

@description('Deploy Azure Managed Redis for the shared state (AZURE_REDIS_DEPLOY): Entra authentication only, TLS on port 10000, data access for the app identity; sets GATEWAY_STATE=rediss://<host>:10000 and GATEWAY_STATE_AUTH=managed-identity.')
param deployRedis bool = false

@description('Azure Managed Redis SKU when deployRedis (AZURE_REDIS_SKU), e.g. Balanced_B0 (smallest), Balanced_B1.')
param redisSkuName string = 'Balanced_B0'

@description('Replicate the deployed Redis (AZURE_REDIS_HIGH_AVAILABILITY); false halves the cost, for dev/test only.')
param redisHighAvailability bool = true

@description('Full resource id of an existing Azure Managed Redis cluster to use instead of deploying one (AZURE_REDIS_RESOURCE_ID): the app identity gets data access on its default database and GATEWAY_STATE points at it. Ignored when deployRedis.')
param redisResourceId string = ''

@description('GATEWAY_STATE for any other Redis (GATEWAY_STATE), e.g. rediss://host:10000. Ignored when deployRedis or redisResourceId is set. Empty: per-instance state.')
param gatewayState string = ''

@description('GATEWAY_STATE_AUTH for gatewayState: managed-identity, key (with gatewayStateKey) or none; empty = the gateway\'s default.')
@allowed([
  ''
  'managed-identity'
  'key'
  'none'
])
param gatewayStateAuth string = ''

@secure()
@description('Access key of the Redis in gatewayState (GATEWAY_STATE_AUTH=key), stored in Key Vault as gateway-state-key; GATEWAY_STATE_KEY is a reference to it.')
param gatewayStateKey string = ''

@secure()
@description('GATEWAY_ID_SECRET override (azd env GATEWAY_ID_SECRET, at least 32 characters): replaces the key the gateway signs Responses API ids with, i.e. a deliberate rotation: every response id handed out before stops resolving (infra/README.md). Empty: keep the one in Key Vault.')
param gatewayIdSecret string = ''

@secure()
@description('The gateway-id-secret in this environment\'s Key Vault, read by azd before each provision (main.parameters.json: secretOrRandomPassword); random characters from azd while there is none yet.')
param gatewayIdSecretCurrent string = ''

@secure()
@description('Two more secretOrRandomPassword reads of the same secret: 30 random characters while the vault has none, completing gatewayIdSecretCurrent to a 45-character key; the stored value twice afterwards, which tells main.bicep to keep it.')
param gatewayIdSecretSeed string = ''

@description('Extra app settings, name -> value (e.g. {"GATEWAY_COOLDOWN": "5"}). A name given here wins over the one the parameters above generate.')
param additionalAppSettings object = {}

@description('Full resource ids of Azure OpenAI accounts the gateway calls with its managed identity (role Cognitive Services OpenAI User). Empty strings are ignored.')
param azureOpenAiResourceIds array = []

@description('Full resource ids of AI Services / Foundry accounts the gateway calls with its managed identity (role Cognitive Services User). Empty strings are ignored.')
param aiServicesResourceIds array = []

@description('Instance memory of the Flex Consumption plan in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Maximum instance count of the Function App.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Concurrent HTTP requests per instance (platform default for Python: 1).')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Instances kept warm for the HTTP functions (billed while idle); 0 = scale to zero.')
@minValue(0)
param alwaysReadyInstanceCount int = 0

@description('Python version of the Functions runtime (Flex Consumption supports 3.10-3.12).')
@allowed([
  '3.10'
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Days a deleted Key Vault stays recoverable (7-90, fixed at creation). Its name stays taken that long after `azd down` unless purged (`azd down --purge`).')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 7

@description('Key Vault purge protection (AZURE_KEY_VAULT_PURGE_PROTECTION). Off (dev): `azd down --purge` frees the vault name and `azd up` recreates the environment. On (production): no one can purge the vault or its secrets before the retention ends; irreversible, and the name stays taken after `azd down` (recover it with keyVaultRecover, wait, or use a new environment name).')
param keyVaultPurgeProtection bool = false

@description('Recover the soft-deleted Key Vault of this environment instead of creating it (AZURE_KEY_VAULT_RECOVER), after `azd down` of a purge-protected environment. Fails when there is no deleted vault: set it for one `azd provision`, then back to false.')
param keyVaultRecover bool = false

// Optional resource names; empty = derived from the environment name.
param resourceGroupName string = ''
param apiServiceName string = ''
param apiUserAssignedIdentityName string = ''
param appServicePlanName string = ''
param storageAccountName string = ''
param logAnalyticsName string = ''
param applicationInsightsName string = ''
param keyVaultName string = ''
param redisName string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var serviceName = 'api'
var functionAppName = !empty(apiServiceName) ? apiServiceName : '${abbrs.webSitesFunctions}${serviceName}-${resourceToken}'
var deploymentContainerName = 'app-package-${take(toLower(functionAppName), 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'

// Route ids with a non-empty key (azd substitutes an unset ${VAR} with an empty string).
var routeKeyIdCandidates = [for entry in items(routeApiKeys): empty(entry.value) ? '' : entry.key]
var routeKeyIds = filter(routeKeyIdCandidates, id => !empty(id))

// Consumer names with non-empty keys, as for routes.
var consumerKeyNameCandidates = [for entry in items(consumerKeys): empty(entry.value) ? '' : entry.key]
var consumerKeyNames = filter(consumerKeyNameCandidates, name => !empty(name))

// GATEWAY_ID_SECRET (DESIGN §13), generated once per environment and then kept. Before every
// provision azd resolves secretOrRandomPassword (main.parameters.json) three times: each read
// returns the vault's gateway-id-secret when there is one, else 15 fresh random letters and digits
// (no vault named yet: AZURE_KEY_VAULT_NAME is unset before the first provision; or no such secret).
// Stored: seed is current twice, and current is written back unchanged (a stored value is never
// padded nor regenerated; the gateway refuses one under 32 characters, naming the setting).
// Not stored: current + seed are 45 independent random characters. A non-empty gatewayIdSecret
// (azd env GATEWAY_ID_SECRET) replaces it: a deliberate rotation. All empty (main.bicep deployed
// without azd's parameter file): no secret and no setting. Comparison in parentheses: pycep
// (tests/infra, checkov) misreads an unparenthesised `a == b ? c : d`.
var gatewayIdSecretStored = (gatewayIdSecretSeed == '${gatewayIdSecretCurrent}${gatewayIdSecretCurrent}')
var gatewayIdSecretValue = empty(trim(gatewayIdSecret)) ? (gatewayIdSecretStored ? gatewayIdSecretCurrent : '${gatewayIdSecretCurrent}${gatewayIdSecretSeed}') : trim(gatewayIdSecret)

// Shared state: the Redis deployed here, else an existing Azure Managed Redis (both through the
// app identity), else gatewayState as given. Azure Managed Redis listens on 10000, TLS only.
var existingRedisIds = deployRedis ? [] : filter([trim(redisResourceId)], id => !empty(id))
var usesManagedRedis = deployRedis || !empty(existingRedisIds)
var managedRedisHostName = deployRedis ? redis.outputs.hostName : (usesManagedRedis ? existingRedisAccess[0].outputs.hostName : '')

// `["${AZURE_OPENAI_RESOURCE_ID=}"]` in main.parameters.json becomes [""] when the variable is unset.
var azureOpenAiAccountIds = filter(azureOpenAiResourceIds, id => !empty(trim(id)))
var aiServicesAccountIds = filter(aiServicesResourceIds, id => !empty(trim(id)))
var cognitiveServicesOpenAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
var cognitiveServicesUserRoleId = 'a97b65f3-24c7-4388-baec-2e87135dc908'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: !empty(apiUserAssignedIdentityName) ? apiUserAssignedIdentityName : '${abbrs.managedIdentityUserAssignedIdentities}${serviceName}-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: !empty(logAnalyticsName) ? logAnalyticsName : '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: !empty(applicationInsightsName) ? applicationInsightsName : '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    purgeProtection: keyVaultPurgeProtection
    recoverSoftDeleted: keyVaultRecover
    gatewayApiKeys: gatewayApiKeys
    routeApiKeys: routeApiKeys
    routeKeyIds: routeKeyIds
    consumerKeys: consumerKeys
    consumerKeyNames: consumerKeyNames
    gatewayStateKey: gatewayStateKey
    gatewayIdSecret: gatewayIdSecretValue
  }
}

module plan 'app/plan.bicep' = {
  name: 'plan'
  scope: rg
  params: {
    name: !empty(appServicePlanName) ? appServicePlanName : '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    identityPrincipalId: identity.outputs.principalId
    principalId: principalId
    principalType: principalType
  }
}

module redis 'app/redis.bicep' = if (deployRedis) {
  name: 'redis'
  scope: rg
  params: {
    name: !empty(redisName) ? redisName : '${abbrs.cacheRedis}${resourceToken}'
    location: location
    tags: tags
    skuName: redisSkuName
    highAvailability: redisHighAvailability
    identityPrincipalId: identity.outputs.principalId
  }
}

// An existing cluster may live in any resource group or subscription: scope the assignment there.
module existingRedisAccess 'app/redis-access.bicep' = [for (clusterId, i) in existingRedisIds: {
  name: 'redis-access-${i}-${resourceToken}'
  scope: resourceGroup(split(clusterId, '/')[2], split(clusterId, '/')[4])
  params: {
    clusterName: last(split(clusterId, '/'))
    principalId: identity.outputs.principalId
  }
}]

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  // Roles first: the host needs storage, and Key Vault references resolve at start. The Redis
  // access policy assignments come first too (GATEWAY_STATE refers to their modules' outputs).
  dependsOn: [
    rbac
  ]
  params: {
    name: functionAppName
    location: location
    tags: tags
    serviceName: serviceName
    appServicePlanId: plan.outputs.id
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.vaultUri
    gatewayApiKeysSecretUri: empty(gatewayApiKeys) ? '' : keyVault.outputs.gatewayApiKeysSecretUri
    routes: routes
    routeKeyIds: routeKeyIds
    consumers: consumers
    consumerKeyNames: consumerKeyNames
    gatewayAuth: gatewayAuth
    gatewayEntraTenant: empty(gatewayEntraTenant) ? tenant().tenantId : gatewayEntraTenant
    gatewayEntraAudience: gatewayEntraAudience
    gatewayState: usesManagedRedis ? 'rediss://${managedRedisHostName}:10000' : trim(gatewayState)
    gatewayStateAuth: usesManagedRedis ? 'managed-identity' : gatewayStateAuth
    gatewayStateKeySecretUri: empty(gatewayStateKey) ? '' : keyVault.outputs.gatewayStateKeySecretUri
    gatewayIdSecretUri: empty(gatewayIdSecretValue) ? '' : keyVault.outputs.gatewayIdSecretUri
    additionalAppSettings: additionalAppSettings
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    alwaysReadyInstanceCount: alwaysReadyInstanceCount
  }
}

// Upstream accounts may live in any resource group or subscription: scope each assignment there.
module azureOpenAiRoles 'app/upstream-rbac.bicep' = [for (accountId, i) in azureOpenAiAccountIds: {
  name: 'upstream-aoai-${i}-${resourceToken}'
  scope: resourceGroup(split(accountId, '/')[2], split(accountId, '/')[4])
  params: {
    accountName: last(split(accountId, '/'))
    principalId: identity.outputs.principalId
    roleDefinitionId: cognitiveServicesOpenAiUserRoleId
  }
}]

module aiServicesRoles 'app/upstream-rbac.bicep' = [for (accountId, i) in aiServicesAccountIds: {
  name: 'upstream-ais-${i}-${resourceToken}'
  scope: resourceGroup(split(accountId, '/')[2], split(accountId, '/')[4])
  params: {
    accountName: last(split(accountId, '/'))
    principalId: identity.outputs.principalId
    roleDefinitionId: cognitiveServicesUserRoleId
  }
}]

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = 'https://${api.outputs.defaultHostName}'
@description('Gateway base URL; the OpenAI base_url is GATEWAY_URL + "/v1", the AzureOpenAI azure_endpoint is GATEWAY_URL.')
output GATEWAY_URL string = 'https://${api.outputs.defaultHostName}'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
@description('Host name of the Azure Managed Redis holding the shared state (deployed or existing); empty when none.')
output AZURE_REDIS_HOST_NAME string = managedRedisHostName
@description('Name of the Azure Managed Redis cluster this template deployed; empty when deployRedis is false.')
output AZURE_REDIS_NAME string = deployRedis ? redis.outputs.name : ''
