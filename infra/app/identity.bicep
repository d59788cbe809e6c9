// User-assigned managed identity of the Function App. One identity does everything:
// host storage (AzureWebJobsStorage), the deployment container, App Insights ingestion,
// Key Vault references and the upstream Entra tokens (AZURE_CLIENT_ID).

@description('Name of the user-assigned managed identity.')
param name string

@description('Location of the identity.')
param location string = resourceGroup().location

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
