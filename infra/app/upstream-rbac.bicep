// One role assignment on one Cognitive Services account (Azure OpenAI, AI Services / Foundry),
// possibly in another resource group or subscription: main.bicep scopes this module to the
// account's resource group. Lets the gateway call the account with its managed identity
// (ROUTE__<ID>__AUTH=managed-identity).

@description('Name of the Cognitive Services account (last segment of its resource id).')
param accountName string

@description('Principal (object) id that receives the role.')
param principalId string

@description('Role definition id: Cognitive Services OpenAI User or Cognitive Services User.')
@allowed([
  '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
  'a97b65f3-24c7-4388-baec-2e87135dc908'
])
param roleDefinitionId string

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'ServicePrincipal'

resource account 'Microsoft.CognitiveServices/accounts@2023-05-01' existing = {
  name: accountName
}

resource roleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, roleDefinitionId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
    principalId: principalId
    principalType: principalType
  }
}
