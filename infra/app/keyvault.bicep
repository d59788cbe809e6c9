// Key Vault (RBAC mode) holding every secret the gateway needs: the inbound gateway keys, the
// consumers' keys, the upstream keys of key-authenticated routes and a Redis access key. The
// Function App reads them through Key Vault references (`@Microsoft.KeyVault(SecretUri=...)`)
// resolved by the platform with its user-assigned identity (site property keyVaultReferenceIdentity).
//
// Secret names (contract with api.bicep, which builds the references):
//   gateway-api-keys            GATEWAY_API_KEYS (comma-separated inbound keys)
//   route-<id>-api-key          ROUTE__<ID>__API_KEY; <id> = route id lowercased, '_' and '.' -> '-'
//   consumer-<name>-keys        CONSUMER__<NAME>__KEYS (comma-separated); <name> as <id> above
//   gateway-state-key           GATEWAY_STATE_KEY (an existing Redis reached with an access key)
//   gateway-id-secret           GATEWAY_ID_SECRET (signs Responses API ids, DESIGN §13; generated once
//                               per environment, main.bicep; azd reads it back before every provision)

@description('Name of the Key Vault (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Location of the vault.')
param location string = resourceGroup().location

@description('Tags applied to the vault.')
param tags object = {}

@description('Days a deleted vault or secret stays recoverable (7-90; fixed when the vault is created). The vault name stays taken that long after `azd down` unless the vault is purged.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 7

@description('Purge protection: nobody can purge the deleted vault or its secrets before the retention ends. Irreversible once on. Off leaves the property out (ARM rejects false).')
param purgeProtection bool = false

@description('createMode recover: bring back the soft-deleted vault of this name instead of creating one. Fails when there is none: set it for one provision only.')
param recoverSoftDeleted bool = false

@secure()
@description('Comma-separated inbound gateway keys; empty creates no secret.')
param gatewayApiKeys string = ''

@secure()
@description('Route id -> upstream API key. Only the ids listed in routeKeyIds are stored.')
param routeApiKeys object = {}

@description('Ids of the routes whose key is stored (the keys of routeApiKeys with a non-empty value).')
param routeKeyIds array = []

@secure()
@description('Consumer name -> comma-separated keys. Only the names listed in consumerKeyNames are stored.')
param consumerKeys object = {}

@description('Names of the consumers whose keys are stored (the keys of consumerKeys with a non-empty value).')
param consumerKeyNames array = []

@secure()
@description('Access key of an existing Redis (GATEWAY_STATE_KEY); empty creates no secret.')
param gatewayStateKey string = ''

@secure()
@description('GATEWAY_ID_SECRET, the key the gateway signs Responses API ids with (main.bicep picks it: the operator\'s override if given, else the one already in this vault, else a generated one); empty creates no secret.')
param gatewayIdSecret string = ''

var gatewayApiKeysSecretName = 'gateway-api-keys'
var gatewayApiKeysSecretNames = empty(gatewayApiKeys) ? [] : [
  gatewayApiKeysSecretName
]
var gatewayStateKeySecretName = 'gateway-state-key'
var gatewayStateKeySecretNames = empty(gatewayStateKey) ? [] : [
  gatewayStateKeySecretName
]
var gatewayIdSecretName = 'gateway-id-secret'
var gatewayIdSecretNames = empty(gatewayIdSecret) ? [] : [
  gatewayIdSecretName
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    createMode: recoverSoftDeleted ? 'recover' : 'default'
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    // Soft delete is always on (Azure no longer lets it be turned off).
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // true or absent: ARM rejects false, and a vault that has it keeps it.
    enablePurgeProtection: purgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// A loop over zero or one name rather than `if (...)`: checkov's Bicep runner unwraps loops but
// not conditions, so a conditional resource would escape its checks.
resource gatewayApiKeysSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for secretName in gatewayApiKeysSecretNames: {
  parent: vault
  name: secretName
  properties: {
    value: gatewayApiKeys
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}]

resource routeApiKeySecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for id in routeKeyIds: {
  parent: vault
  name: format('route-{0}-api-key', replace(replace(toLower(id), '_', '-'), '.', '-'))
  properties: {
    value: routeApiKeys[id]
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}]

resource consumerKeySecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for consumerName in consumerKeyNames: {
  parent: vault
  name: format('consumer-{0}-keys', replace(replace(toLower(consumerName), '_', '-'), '.', '-'))
  properties: {
    value: consumerKeys[consumerName]
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}]

resource gatewayStateKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for secretName in gatewayStateKeySecretNames: {
  parent: vault
  name: secretName
  properties: {
    value: gatewayStateKey
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}]

// Written with the same value on every provision (main.bicep reads it back first), so the gateway's
// response ids stay valid; a new value is a rotation (infra/README.md).
resource gatewayIdSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for secretName in gatewayIdSecretNames: {
  parent: vault
  name: secretName
  properties: {
    value: gatewayIdSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}]

output name string = vault.name
output id string = vault.id
output vaultUri string = vault.properties.vaultUri
@description('Versionless URI of the gateway keys secret (it exists only when gatewayApiKeys was not empty).')
output gatewayApiKeysSecretUri string = '${vault.properties.vaultUri}secrets/${gatewayApiKeysSecretName}'
@description('Versionless URI of the Redis access key secret (it exists only when gatewayStateKey was not empty).')
output gatewayStateKeySecretUri string = '${vault.properties.vaultUri}secrets/${gatewayStateKeySecretName}'
@description('Versionless URI of the response-id signing secret (it exists only when gatewayIdSecret was not empty). The URI, never the value.')
output gatewayIdSecretUri string = '${vault.properties.vaultUri}secrets/${gatewayIdSecretName}'
