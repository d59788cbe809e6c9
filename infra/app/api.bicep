// The gateway: a Python Function App on the Flex Consumption plan.
//
// App settings follow DESIGN §3 (routes), §9 (consumers, GATEWAY_AUTH) and §11 (GATEWAY_STATE).
// Flex Consumption rejects the legacy settings FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION,
// WEBSITE_RUN_FROM_PACKAGE, WEBSITE_CONTENTSHARE, WEBSITE_CONTENTAZUREFILECONNECTIONSTRING,
// SCM_DO_BUILD_DURING_DEPLOYMENT, ENABLE_ORYX_BUILD, WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT and
// siteConfig.linuxFxVersion: the runtime comes from functionAppConfig.runtime, scale from
// functionAppConfig.scaleAndConcurrency. None of them is set here (tests/infra checks it).

@description('Name of the Function App.')
param name string

@description('Location of the Function App.')
param location string = resourceGroup().location

@description('Tags applied to the Function App (the azd-service-name tag is added).')
param tags object = {}

@description('azd service name (azure.yaml services.<name>); azd finds the app by this tag.')
param serviceName string = 'api'

@description('Resource id of the Flex Consumption plan.')
param appServicePlanId string

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Name of the host storage account.')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Application Insights connection string.')
param applicationInsightsConnectionString string

@description('Key Vault URI (https://<name>.vault.azure.net/).')
param keyVaultUri string

@description('Versionless secret URI of the gateway keys, or empty for none.')
param gatewayApiKeysSecretUri string = ''

@description('Routes (see infra/README.md); each becomes ROUTE__<ID>__<FIELD> settings.')
param routes array = []

@description('Ids of the routes whose upstream key is stored in Key Vault (secret route-<id>-api-key).')
param routeKeyIds array = []

@description('Consumers (see infra/README.md); each becomes CONSUMER__<NAME>__<FIELD> settings.')
param consumers array = []

@description('Names of the consumers whose keys are stored in Key Vault (secret consumer-<name>-keys).')
param consumerKeyNames array = []

@description('GATEWAY_AUTH: who may call (DESIGN §9).')
@allowed([
  'keys'
  'entra'
  'keys,entra'
  'none'
])
param gatewayAuth string = 'keys'

@description('GATEWAY_ENTRA_TENANT: tenant id whose tokens are accepted; set only when gatewayAuth includes entra.')
param gatewayEntraTenant string = ''

@description('GATEWAY_ENTRA_AUDIENCE: accepted audiences, comma-separated; set only when gatewayAuth includes entra.')
param gatewayEntraAudience string = ''

@description('GATEWAY_STATE: rediss://host:port of the shared state store; empty = per instance (memory).')
param gatewayState string = ''

@description('GATEWAY_STATE_AUTH: managed-identity, key or none; empty = the gateway\'s default for the URL.')
@allowed([
  ''
  'managed-identity'
  'key'
  'none'
])
param gatewayStateAuth string = ''

@description('Versionless secret URI of the Redis access key (GATEWAY_STATE_KEY), or empty for none.')
param gatewayStateKeySecretUri string = ''

@description('Versionless secret URI of the key that signs Responses API ids (GATEWAY_ID_SECRET, DESIGN §13), or empty for none.')
param gatewayIdSecretUri string = ''

@description('Extra app settings, name -> value (e.g. GATEWAY_COOLDOWN). Must not contain a Flex-rejected name. A name also generated here (GATEWAY_AUTH, GATEWAY_STATE, ...) is taken from here.')
param additionalAppSettings object = {}

@description('Python version of the Functions runtime.')
@allowed([
  '3.10'
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Maximum number of instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Concurrent HTTP requests per instance. The platform default for Python is 1, which gives every streaming request its own instance; the gateway is async and I/O-bound.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Instances kept warm for the HTTP functions (billed while idle); 0 = scale to zero.')
@minValue(0)
param alwaysReadyInstanceCount int = 0

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

var siteTags = union(tags, {
  'azd-service-name': serviceName
})

var baseAppSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'PYTHON_ENABLE_INIT_INDEXING'
    value: '1'
  }
]

var gatewayKeySettings = empty(gatewayApiKeysSecretUri) ? [] : [
  {
    name: 'GATEWAY_API_KEYS'
    value: '@Microsoft.KeyVault(SecretUri=${gatewayApiKeysSecretUri})'
  }
]

// routes[] -> ROUTE__<ID>__<FIELD> (DESIGN §3). Only the fields a route gives are set (null
// values are dropped below); scalars go through string(), objects (HEADERS, PARAMS) become JSON
// text. API_KEY is never read from routes[]: it is a Key Vault reference to the secret created
// from the @secure routeApiKeys (keyvault.bicep names it the same way).
var routeSettingsPerRoute = [for r in routes: [
  {
    name: 'ROUTE__${r.id}__MODEL'
    value: contains(r, 'model') ? string(r.model) : null
  }
  {
    name: 'ROUTE__${r.id}__BACKEND'
    value: contains(r, 'backend') ? string(r.backend) : null
  }
  {
    name: 'ROUTE__${r.id}__ENDPOINT'
    value: contains(r, 'endpoint') ? string(r.endpoint) : null
  }
  {
    name: 'ROUTE__${r.id}__DEPLOYMENT'
    value: contains(r, 'deployment') ? string(r.deployment) : null
  }
  {
    name: 'ROUTE__${r.id}__API_VERSION'
    value: contains(r, 'apiVersion') ? string(r.apiVersion) : null
  }
  {
    name: 'ROUTE__${r.id}__AUTH'
    value: contains(r, 'auth') ? string(r.auth) : null
  }
  {
    name: 'ROUTE__${r.id}__API_KEY'
    value: contains(routeKeyIds, r.id) ? format('@Microsoft.KeyVault(SecretUri={0}secrets/route-{1}-api-key)', keyVaultUri, replace(replace(toLower(r.id), '_', '-'), '.', '-')) : null
  }
  {
    name: 'ROUTE__${r.id}__CLIENT_ID'
    value: contains(r, 'clientId') ? string(r.clientId) : null
  }
  {
    name: 'ROUTE__${r.id}__SCOPE'
    value: contains(r, 'scope') ? string(r.scope) : null
  }
  {
    name: 'ROUTE__${r.id}__HEADERS'
    value: contains(r, 'headers') ? string(r.headers) : null
  }
  {
    name: 'ROUTE__${r.id}__PARAMS'
    value: contains(r, 'params') ? string(r.params) : null
  }
  {
    name: 'ROUTE__${r.id}__PRIORITY'
    value: contains(r, 'priority') ? string(r.priority) : null
  }
  {
    name: 'ROUTE__${r.id}__WEIGHT'
    value: contains(r, 'weight') ? string(r.weight) : null
  }
  {
    name: 'ROUTE__${r.id}__TIMEOUT'
    value: contains(r, 'timeout') ? string(r.timeout) : null
  }
  {
    name: 'ROUTE__${r.id}__KEY_HEADER'
    value: contains(r, 'keyHeader') ? string(r.keyHeader) : null
  }
  {
    name: 'ROUTE__${r.id}__REASONING'
    value: contains(r, 'reasoning') ? toLower(string(r.reasoning)) : null
  }
  {
    name: 'ROUTE__${r.id}__FAMILY'
    value: contains(r, 'family') ? string(r.family) : null
  }
]]

var routeSettings = filter(flatten(routeSettingsPerRoute), setting => setting.value != null)

// consumers[] -> CONSUMER__<NAME>__<FIELD> (DESIGN §9), like routes: only the fields given are set
// (ARM evaluates only the branch taken), lists as comma-separated text; KEYS is a Key Vault reference
// to the secret made from the @secure consumerKeys. ARM fails the deployment on a quotaPeriod other
// than the four (the lookup names them) and on a limit that is not a whole number (int()).
var quotaPeriods = { hourly: 'hourly', daily: 'daily', weekly: 'weekly', monthly: 'monthly' }

var consumerSettingsPerConsumer = [for c in consumers: [
  {
    name: 'CONSUMER__${c.name}__KEYS'
    value: contains(consumerKeyNames, c.name) ? format('@Microsoft.KeyVault(SecretUri={0}secrets/consumer-{1}-keys)', keyVaultUri, replace(replace(toLower(c.name), '_', '-'), '.', '-')) : null
  }
  {
    name: 'CONSUMER__${c.name}__PRINCIPALS'
    value: contains(c, 'principals') ? (empty(c.principals) ? null : join(c.principals, ',')) : null
  }
  {
    name: 'CONSUMER__${c.name}__MODELS'
    value: contains(c, 'models') ? (empty(c.models) ? null : join(c.models, ',')) : null
  }
  {
    name: 'CONSUMER__${c.name}__TOKENS_PER_MINUTE'
    value: contains(c, 'tokensPerMinute') ? string(int(c.tokensPerMinute)) : null
  }
  {
    name: 'CONSUMER__${c.name}__REQUESTS_PER_MINUTE'
    value: contains(c, 'requestsPerMinute') ? string(int(c.requestsPerMinute)) : null
  }
  {
    name: 'CONSUMER__${c.name}__TOKEN_QUOTA'
    value: contains(c, 'tokenQuota') ? string(int(c.tokenQuota)) : null
  }
  {
    name: 'CONSUMER__${c.name}__QUOTA_PERIOD'
    value: contains(c, 'quotaPeriod') ? quotaPeriods[c.quotaPeriod] : null
  }
]]

var consumerSettings = filter(flatten(consumerSettingsPerConsumer), setting => setting.value != null)

// Who may call (DESIGN §9), the shared state (DESIGN §11) and the response-id key (DESIGN §13,
// a Key Vault reference like every secret here). The Entra settings only when
// GATEWAY_AUTH takes Entra tokens; empty values are left out, and so is a name that
// additionalAppSettings gives (it wins, e.g. a GATEWAY_AUTH set there before this parameter).
var acceptsEntra = contains(split(gatewayAuth, ','), 'entra')

var gatewaySettingCandidates = [
  { name: 'GATEWAY_AUTH', value: gatewayAuth }
  { name: 'GATEWAY_ENTRA_TENANT', value: acceptsEntra ? gatewayEntraTenant : '' }
  { name: 'GATEWAY_ENTRA_AUDIENCE', value: acceptsEntra ? gatewayEntraAudience : '' }
  { name: 'GATEWAY_STATE', value: gatewayState }
  { name: 'GATEWAY_STATE_AUTH', value: empty(gatewayState) ? '' : gatewayStateAuth }
  { name: 'GATEWAY_STATE_KEY', value: empty(gatewayStateKeySecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${gatewayStateKeySecretUri})' }
  { name: 'GATEWAY_ID_SECRET', value: empty(gatewayIdSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${gatewayIdSecretUri})' }
]

var gatewaySettings = filter(gatewaySettingCandidates, setting => !(empty(setting.value) || contains(additionalAppSettings, setting.name)))

var additionalSettings = [for setting in items(additionalAppSettings): {
  name: setting.key
  value: string(setting.value)
}]

var appSettings = concat(baseAppSettings, gatewayKeySettings, gatewaySettings, consumerSettings, routeSettings,
  additionalSettings)

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: siteTags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: appServicePlanId
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReadyInstanceCount > 0 ? [
          {
            name: 'http'
            instanceCount: alwaysReadyInstanceCount
          }
        ] : []
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Deployment goes through Entra ID (azd, az functionapp deploy); no publishing passwords.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output id string = functionApp.id
output defaultHostName string = functionApp.properties.defaultHostName
